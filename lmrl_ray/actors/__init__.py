"""Ray actors that act: inference engines, rollout workers and simulator replicas.

The engine interface is `engine.py`; `hf_engine.py` is the Hugging Face back end.
"""
