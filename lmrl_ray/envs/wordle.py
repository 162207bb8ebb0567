"""Wordle: six tries at a hidden five-letter word from a vocabulary of 400 common words.

The transcript starts with `Wordle:`. A guess is the word's letters separated by
single spaces (`a p p l e`); the reply marks each letter `g` (right letter, right
place), `y` (in the word elsewhere) or `b` (not in the word), also separated by spaces.
Any other text (unspaced, upper case, a word outside the vocabulary) is an invalid guess:
the reply is the empty line, the reward is `invalid_penalty`, and it costs a try.
Reward: -1 for each guess that does not solve, 0 for the solving guess.

Repeated letters follow the real game: greens are marked first, then a letter is marked
`y` only as many times as the answer still holds it unmatched, leftmost first. The
source's engine (LMRL-Gym) instead marks every occurrence of a letter present anywhere
in the answer as `y`, so a few feedback strings differ from its data: guessing `speed`
against `abide` gives `b b y b y` here (the answer has one `e`) and `b b y y y` there.

Feedback codes: the five marks read as a base-3 numeral (`b`=0, `y`=1, `g`=2, first
letter most significant), so `g g g g g` is 242. `feedback_matrix()` holds the code of
every (guess, answer) pair of the vocabulary, which makes the scripted policies fast.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmrl_ray.envs.base import ScriptedPolicy, TextEnv, Turn

VOCABULARY_PATH = Path(__file__).parent / "data" / "wordle_words.txt"
WORD_LENGTH = 5
MAX_GUESSES = 6
NUM_CODES = 3**WORD_LENGTH
MARK_DIGITS = {"b": 0, "y": 1, "g": 2}
SOLVED_CODE = NUM_CODES - 1
_PLACE_VALUES = 3 ** np.arange(WORD_LENGTH - 1, -1, -1)


# -- Vocabulary ----------------------------------------------------------------------


def load_vocabulary(path: Path) -> tuple[str, ...]:
    """The words of `path`, one per line, sorted; blank lines are skipped.

    Sorting here makes a word's index its alphabetical rank, which the expert's
    tie-break relies on, whatever the file's order.
    """
    seen: dict[str, int] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        word = line.strip()
        if not word:
            continue
        if len(word) != WORD_LENGTH or not set(word) <= set(string.ascii_lowercase):
            raise ValueError(f"{path}: line {lineno}: {word!r} is not {WORD_LENGTH} lowercase letters a-z")
        if word in seen:
            raise ValueError(f"{path}: line {lineno}: {word!r} repeats line {seen[word]}")
        seen[word] = lineno
    if not seen:
        raise ValueError(f"{path}: no words")
    return tuple(sorted(seen))


@functools.cache
def vocabulary() -> tuple[str, ...]:
    """The task's words, sorted (loaded once)."""
    return load_vocabulary(VOCABULARY_PATH)


@functools.cache
def word_index() -> dict[str, int]:
    """Word -> its index in `vocabulary()`."""
    return {word: i for i, word in enumerate(vocabulary())}


def spaced(word: str) -> str:
    """A word as the agent writes it: `apple` -> `a p p l e`."""
    return " ".join(word)


def parse_guess(text: str) -> str | None:
    """The vocabulary word that `text` spells in the spaced format, else None."""
    if len(text) != 2 * WORD_LENGTH - 1 or text[1::2] != " " * (WORD_LENGTH - 1):
        return None
    word = text[::2]
    return word if word in word_index() else None


# -- Feedback ------------------------------------------------------------------------


def feedback(guess: str, answer: str) -> str:
    """The marks for `guess` against `answer` as the real game gives them: `g y b b g`."""
    marks = ["g" if g == a else "b" for g, a in zip(guess, answer)]
    # Letters of the answer not matched by a green; each can turn one guess letter yellow.
    unmatched: dict[str, int] = {}
    for g, a in zip(guess, answer):
        if g != a:
            unmatched[a] = unmatched.get(a, 0) + 1
    for i, g in enumerate(guess):
        if marks[i] == "b" and unmatched.get(g, 0) > 0:
            marks[i] = "y"
            unmatched[g] -= 1
    return " ".join(marks)


def encode_feedback(marks: str) -> int:
    """The base-3 code of a spaced feedback string: `g g g g g` -> 242."""
    code = 0
    for mark in marks.split(" "):
        code = 3 * code + MARK_DIGITS[mark]
    return code


def feedback_codes(words: Sequence[str]) -> np.ndarray:
    """Feedback codes of every (guess, answer) pair of `words`: (N, N) uint8, [guess, answer].

    Vectorised form of `feedback`, written independently so each checks the other.
    """
    letters = np.array([[ord(c) for c in word] for word in words], dtype=np.uint8)  # (N, 5)
    guess, answer = letters[:, None, :], letters[None, :, :]
    green = guess == answer  # (N, N, 5) [g, a, i]
    not_green = ~green
    # unmatched[g, a, i]: answer positions j that are not green and hold guess letter i.
    same_letter = guess[:, :, :, None] == answer[:, :, None, :]  # (N, N, 5, 5) [g, a, i, j]
    unmatched = (same_letter & not_green[:, :, None, :]).sum(-1)
    # earlier[g, a, i]: non-green guess positions k < i with the same letter as position i;
    # they claim the yellows first, as in the real game.
    repeats = letters[:, :, None] == letters[:, None, :]  # (N, 5, 5) [g, i, k]
    repeats &= np.tril(np.ones((WORD_LENGTH, WORD_LENGTH), dtype=bool), k=-1)
    earlier = (repeats[:, None, :, :] & not_green[:, :, None, :]).sum(-1)
    yellow = not_green & (earlier < unmatched)
    digits = 2 * green + yellow  # (N, N, 5)
    return (digits @ _PLACE_VALUES).astype(np.uint8)


@functools.cache
def feedback_matrix() -> np.ndarray:
    """`feedback_codes(vocabulary())`, computed once and read-only."""
    codes = feedback_codes(vocabulary())
    codes.setflags(write=False)
    return codes


def feedback_history(transcript: Sequence[Turn]) -> list[tuple[int, int]]:
    """(word index, feedback code) of each valid guess in a Wordle transcript.

    Reads only the text a policy sees: an agent turn followed by a non-empty reply is a
    valid guess; an invalid one got the empty reply and tells nothing about the answer.
    """
    history = []
    for guess, reply in zip(transcript[1::2], transcript[2::2]):
        if reply.text:
            history.append((word_index()[guess.text[::2]], encode_feedback(reply.text)))
    return history


def consistent_answers(history: Sequence[tuple[int, int]]) -> np.ndarray:
    """Boolean mask over the vocabulary of the answers that agree with all of `history`."""
    matrix = feedback_matrix()
    mask = np.ones(len(vocabulary()), dtype=bool)
    for guess, code in history:
        mask &= matrix[guess] == code
    return mask


# -- Environment ---------------------------------------------------------------------


class WordleEnv(TextEnv):
    """Wordle with the real game's feedback; `options={"word": "apple"}` pins the answer."""

    task = "wordle"
    option_names = ("word",)

    def __init__(self, *, invalid_penalty: float = -1.0, render_mode: str | None = None):
        """`invalid_penalty`: reward for an invalid guess (the source's RL scripts used -10)."""
        super().__init__(max_agent_turns=MAX_GUESSES, render_mode=render_mode)
        self.invalid_penalty = float(invalid_penalty)
        self.answer = ""

    def _reset(self, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if "word" in options:
            word = options["word"]
            if word not in word_index():
                raise ValueError(
                    f"{self.task}: word {word!r} is not in the vocabulary ({VOCABULARY_PATH.name})"
                )
            self.answer = word
        else:
            self.answer = self._rng_choice(vocabulary())
        return "Wordle:", {}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        guess = parse_guess(action)
        solved = guess == self.answer
        # Running out of tries is a real end of the game (terminated), not a time limit.
        terminated = solved or self.agent_turns + 1 >= self.max_agent_turns
        info: dict[str, Any] = {"invalid_action": guess is None}
        if terminated:
            info["success"] = solved
        if guess is None:
            return "", self.invalid_penalty, terminated, info
        return feedback(guess, self.answer), 0.0 if solved else -1.0, terminated, info

    def legal_actions(self) -> list[str]:
        return [spaced(word) for word in vocabulary()]


# -- Scripted policies ---------------------------------------------------------------
# They read only the feedback in the transcript, never the answer.


def _max_entropy_guess(candidates: np.ndarray) -> int:
    """The vocabulary word whose feedback splits `candidates` (indices) with most entropy.

    Ties go to a word that is still a candidate, then to the alphabetically first.
    """
    matrix = feedback_matrix()
    num_words, num_candidates = matrix.shape[0], len(candidates)
    # Offset each guess's codes into its own block of NUM_CODES bins: one bincount counts all rows.
    binned = matrix[:, candidates].astype(np.int64) + NUM_CODES * np.arange(num_words)[:, None]  # (N, C)
    counts = np.bincount(binned.ravel(), minlength=num_words * NUM_CODES).reshape(num_words, NUM_CODES)
    # H = log2 C - sum_k c_k log2 c_k / C for the partition sizes c_k.
    entropy = np.log2(num_candidates) - (counts * np.log2(np.maximum(counts, 1))).sum(1) / num_candidates
    # Equal partitions in another bin order can differ in the last float bits; round them level.
    entropy = np.round(entropy, 9)
    is_candidate = np.zeros(num_words, dtype=bool)
    is_candidate[candidates] = True
    return int(np.lexsort((np.arange(num_words), ~is_candidate, -entropy))[0])


@functools.cache
def _opening_guess() -> int:
    return _max_entropy_guess(np.arange(len(vocabulary())))


class InformationGainPolicy(ScriptedPolicy):
    """The expert: each turn, the word that maximises the entropy of the feedback over the
    answers still consistent with all feedback; the last candidate once one remains.
    Deterministic (see `_max_entropy_guess` for ties). It opens with `crane` and solves
    every answer within four guesses; mean return over all 400 answers -1.88 (the
    paper's maximum: -1.94)."""

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        history = feedback_history(env.transcript)
        if not history:
            return spaced(vocabulary()[_opening_guess()])
        candidates = np.flatnonzero(consistent_answers(history))
        best = candidates[0] if len(candidates) == 1 else _max_entropy_guess(candidates)
        return spaced(vocabulary()[best])


class RandomWordPolicy(ScriptedPolicy):
    """A uniformly random vocabulary word each turn."""

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        words = vocabulary()
        return spaced(words[int(rng.integers(len(words)))])


class WordleBehaviourPolicy(ScriptedPolicy):
    """The data mixture: each turn, with probability `consistent_prob` a uniformly random
    word consistent with all feedback so far, otherwise a uniformly random word.

    The choice is made per turn, as the source's data generator did, so one episode
    mixes informed and wasted guesses and the data rewards telling them apart (credit
    assignment) rather than telling whole good episodes from bad ones. The default 0.32
    is tuned to the paper's dataset (mean return -4.12, success 0.70, 4.82 turns): over
    2,000 episodes it gives -4.11, 0.69 and 4.81.
    """

    def __init__(self, consistent_prob: float = 0.32):
        if not 0.0 <= consistent_prob <= 1.0:
            raise ValueError(f"wordle: consistent_prob must be in [0, 1], got {consistent_prob}")
        self.consistent_prob = consistent_prob

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        words = vocabulary()
        if rng.random() < self.consistent_prob:
            candidates = np.flatnonzero(consistent_answers(feedback_history(env.transcript)))
            return spaced(words[int(rng.choice(candidates))])
        return spaced(words[int(rng.integers(len(words)))])
