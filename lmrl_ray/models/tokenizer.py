"""The tokenizer of the embedded tiny model, and the newline rule every tokenizer must meet.

A policy's utterance ends at a newline (`lmrl_ray.envs.base`), so generation stops at
one token id: the newline must be exactly one token of its own. Our tokenizer makes
"\\n" an added (non-special) token, matched before byte-level BPE ever sees the text,
so no merge can swallow it ("a\\n\\nb" is a, \\n, \\n, b); `newline_id` checks the same
property of any tokenizer handed to us.

The tiny tokenizer is byte-level BPE (any text encodes, nothing is ever unknown),
trained with the `tokenizers` library on the tasks' own text:

- `PAD` ("<|pad|>", id 0): padding only, never part of a sequence the model reads.
  A pad of its own, not the end-of-text token reused, so a mask built from
  `input_ids == pad_token_id` can never hide a real token.
- `EOS` ("<|endoftext|>", id 1): GPT-2's end-of-text token, also the bos token.
  Encoding adds no special tokens: a prompt is exactly its rendered text.
- `NEWLINE` ("\\n", the last id): an ordinary (non-special) added token, so decoding
  with `skip_special_tokens=True` keeps line breaks.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD = "<|pad|>"
EOS = "<|endoftext|>"
NEWLINE = "\n"


def train_tokenizer(lines: Iterable[str], *, vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of `vocab_size` tokens in all (special tokens and the
    newline included) trained on `lines`, each one line of text without its newline.

    Deterministic: the same lines in the same order give the same vocabulary and merges.
    """
    lines = list(lines)
    bad = next((line for line in lines if NEWLINE in line), None)
    if bad is not None:
        raise ValueError(f"train_tokenizer takes single lines; this one holds a newline: {bad[:80]!r}")
    backend = Tokenizer(models.BPE())
    # GPT-2's pre-tokenisation: bytes mapped to printable characters, split by its regex,
    # so a word keeps its leading space ("Ġmove") as in GPT-2's own vocabulary.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        # One id is left for the newline, added after training so the trainer never merges it.
        vocab_size=vocab_size - 1,
        special_tokens=[PAD, EOS],
        # All 256 byte symbols, seen in the corpus or not: any text stays encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(lines, trainer, length=len(lines))
    backend.add_tokens([AddedToken(NEWLINE, normalized=False, special=False)])
    if backend.get_vocab_size() != vocab_size:
        raise ValueError(
            f"the corpus supports only {backend.get_vocab_size()} tokens, fewer than vocab_size={vocab_size}; "
            "use a smaller vocabulary or a larger corpus"
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=EOS,
        model_max_length=model_max_length,
    )


def newline_id(tokenizer: PreTrainedTokenizerFast) -> int:
    """The id of the newline token, at which generation stops.

    Raises ValueError unless "\\n" encodes to exactly one token that is also the token
    between two words ("a\\nb") and at the end of a prompt ("a\\n"), and decodes back to
    "\\n". Foreign tokenizers may still merge runs of newlines ("\\n\\n" is one GPT-2 token,
    628): our prompts hold a blank line only after an empty utterance, and the stop is
    the single newline.
    """
    ids = tokenizer.encode(NEWLINE, add_special_tokens=False)
    if len(ids) == 1:
        (nl,) = ids
        between = tokenizer.encode("a\nb", add_special_tokens=False)
        at_end = tokenizer.encode("a\n", add_special_tokens=False)
        if nl in between and at_end[-1:] == [nl] and tokenizer.decode([nl]) == NEWLINE:
            return nl
    raise ValueError(
        f"tokenizer {tokenizer.name_or_path or type(tokenizer).__name__!r}: the newline is not one token of its own "
        f"(encode('\\n') = {ids}, encode('a\\nb') = {tokenizer.encode('a' + NEWLINE + 'b', add_special_tokens=False)}); "
        "a policy's turn ends at a newline and generation stops at its single token id"
    )
