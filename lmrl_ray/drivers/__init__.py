"""Drivers: each loop a short function that reads like its algorithm. Offline training
(`offline.py`), online training (`online.py`), evaluation (`evaluation.py`), the main job
(`demo.py`), the benchmark (`benchmark.py`) and its report (`report.py`), the simulator
audit (`audit.py`). `lmrl_ray.cli` is the command line over them.
"""
