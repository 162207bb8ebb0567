"""The Ray shell: engine pools (`pool.py`) and weight transport (`weights.py`) around the
engines of `lmrl_ray.engines`, rollout workers (`rollout_worker.py`) and their group, the
one path that fans episodes out to them (`rollout_group.py`), and simulator replicas
(`simulator_replicas.py`).
"""
