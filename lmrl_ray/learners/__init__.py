"""Learners (one file per algorithm: `bc`, `ilql`, `mc`), the `Learner` that owns model,
heads, optimizer and checkpoint, and the data-parallel `LearnerGroup`; see
docs/training.md."""
