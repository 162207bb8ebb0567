"""LM simulators for the dialogue tasks (`lm.py`) and their distillation from grounded
dialogues (`distill.py`); see docs/evaluation.md."""
