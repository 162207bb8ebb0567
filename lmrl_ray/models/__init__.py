"""The model layer: policies (the embedded tiny GPT-2 or a local Hugging Face folder),
their tokenizers, checkpoints, the heads learners put on top, and the value guidance
that decodes with those heads (`lmrl_ray.models.guidance`).

    model, tokenizer = lmrl_ray.models.load_policy("tiny")   # or a folder path
    stop = lmrl_ray.models.newline_id(tokenizer)              # generation stops here
    lmrl_ray.models.save_checkpoint(model, tokenizer, "ckpt/step-100")

Nothing is downloaded: "tiny" is built from the tasks' own text on first use and cached
(see `lmrl_ray.models.tiny`).
"""

from lmrl_ray.models.checkpoint import load_policy, save_checkpoint
from lmrl_ray.models.guidance import ValueGuidance
from lmrl_ray.models.heads import (
    HEADS_FILE,
    ILQLHeads,
    ILQLOutput,
    ValueHead,
    load_heads,
    save_heads,
)
from lmrl_ray.models.tiny import TINY
from lmrl_ray.models.tokenizer import EOS, NEWLINE, PAD, newline_id

__all__ = [
    "EOS",
    "HEADS_FILE",
    "ILQLHeads",
    "ILQLOutput",
    "NEWLINE",
    "PAD",
    "TINY",
    "ValueGuidance",
    "ValueHead",
    "load_heads",
    "load_policy",
    "newline_id",
    "save_checkpoint",
    "save_heads",
]
