"""lmrl-ray: multi-turn reinforcement learning with language models on Ray."""

__version__ = "0.1.0"
