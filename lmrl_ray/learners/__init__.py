"""Learners: the configs (`config.py`), the `Learner` that owns model, heads, optimizer and
checkpoint (`learner.py`), what an algorithm is to it (`algorithm.py`), one file per
algorithm (`bc.py`: BC, filtered and online filtered BC; `mc.py`; `ilql.py`; `ppo.py`
with `ppo_math.py`; `guided.py` what MC Returns and ILQL share), the masked operations
and the discounted scan they share (`ops.py`), and the data-parallel `LearnerGroup`
(`group.py`); see docs/training.md."""
