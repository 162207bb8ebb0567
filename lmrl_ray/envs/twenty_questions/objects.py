"""The Twenty Questions knowledge table: the objects, the question bank, and how a
question is understood.

The table (`data/twenty_questions_objects.json`) holds the original LMRL-Gym's 158 objects
in 17 categories, in its order (`llm_rl_scripts/twenty_questions/env/data.py:52-70`), each
with the source's variants as synonyms and, written for this project, the value of every
yes/no attribute for the typical object. The same file holds the *question bank*: for
every attribute and every category its canonical question, paraphrases (same answer) and
negations (the opposite answer, e.g. "Is it natural?" for man-made), plus the templates
the scripted questioners phrase a guess in.

How a question is understood: `normalise` turns text into a key (lower case, punctuation
and articles dropped, "the object" / "this thing" -> "it", "I" / "people" -> "you",
fillers such as "so" or "please" dropped). A key from the bank means its attribute or
category, so "Would I find the object in a kitchen?" means what "Would you find it in a
kitchen?" means. Otherwise it is a *guess* if it ends with a name of an object and holds
no other noun (the source's rule, see `GUESS_FRAME_WORDS`): "Is it a banana?", "Is it a
kind of banana?", "Is it a small banana?". A text with no `?`, or that is neither (several
objects at once, "Is it a fruit or a banana?", "Answer yes.", gibberish), is *unresolved*:
`KnowledgeTable.parse` gives None.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

DATA_PATH = Path(__file__).parent.parent / "data" / "twenty_questions_objects.json"

# Longer texts are never a question from the bank; refusing them early keeps the
# normaliser's regular expressions cheap on enormous input.
MAX_QUESTION_CHARS = 300

ATTRIBUTE, CATEGORY, GUESS = "attribute", "category", "guess"
ARTICLES = ("a", "an", "")

# The source ends the game when the oracle answers "Yes." to a question that ends with
# one of the object's variants and holds no other noun: its `is_done` (data.py:351-391)
# tags the words with NLTK and lets through any word that is not a noun, the words of the
# object's own variants, the nouns "object", "something", "type" and "kind", and a noun
# right before "of" ("a pair of shoes"). We have no tagger, and our oracle's "Yes." must be
# true, so the words besides the name come from closed lists: the frame of a question and
# plain qualifiers (after `normalise`, which has dropped articles and made "the object",
# "this thing" and "they" into "it"), and the counter words that may stand before "of".
# A word outside them (another noun, "not", "or", "than", "like") makes the question no
# guess: "Is it a cat or a dog?", "Is it bigger than a cat?", "Is it a picture of a cat?".
GUESS_FRAME_WORDS = frozenset({
    # the frame of a question
    "is", "are", "was", "be", "am", "could", "can", "might", "may", "would", "will", "should",
    "must", "does", "do", "did", "it", "you", "what", "thinking", "think", "imagining",
    "picturing", "guessing", "guess", "mean", "have", "got", "called", "named", "of", "about",
    # the source's ignored nouns (data.py:362)
    "object", "something", "type", "kind",
    # adverbs and plain qualifiers
    "perhaps", "maybe", "possibly", "probably", "just", "really", "actually", "exactly",
    "definitely", "certainly", "indeed", "still", "some", "small", "little", "big", "large",
    "real", "regular", "normal", "ordinary", "typical", "common", "standard", "usual",
    "simple", "basic", "plain", "classic", "traditional", "everyday", "average", "single",
})
COUNTER_WORDS = frozenset({"sort", "form", "variety", "piece", "pair", "pack", "set", "bottle", "box", "bag", "bunch"})
# Some names are verbs too ("watch", "saw", "ring", "train"): "Is it something you can
# watch?" asks what one does with the object, not which object it is, and a television
# must not be told "No." as if it had been guessed wrong. A name right after one of these
# words is read as that verb, so the question is no guess.
VERB_BEFORE_NAME = frozenset({"you", "can", "could", "might", "may", "would", "will", "should", "must",
                              "do", "does", "did"})


@dataclass(frozen=True)
class Meaning:
    """What a question asks: an attribute, a category or a guess (`kind`) of `key` (the
    attribute name, category name or object name); `negated` phrasings ask the opposite."""

    kind: str
    key: str
    negated: bool = False

    def positive(self) -> Meaning:
        return Meaning(self.kind, self.key)


@dataclass(frozen=True, eq=False)
class TableObject:
    """One object of the table."""

    name: str
    article: str
    """"a", "an" or "" (plural and mass nouns: "jeans", "broccoli")."""
    category: str
    synonyms: tuple[str, ...]
    attributes: Mapping[str, bool]
    synonym_articles: Mapping[str, str]
    """The article of each synonym that does not take the default (see `spoken`)."""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.synonyms)

    def spoken(self, name: str | None = None) -> str:
        """The object (or its synonym `name`) as said in a question: "a banana", "an
        apple", "pants", "a pair of pants". A synonym takes its article from
        `synonym_articles`, else "a" or "an" by its first letter, or none where the
        object's name takes none."""
        name = name or self.name
        if name == self.name:
            article = self.article
        elif name in self.synonym_articles:
            article = self.synonym_articles[name]
        else:
            article = ("an" if name[0].lower() in "aeiou" else "a") if self.article else ""
        return f"{article} {name}".strip()


# -- Normalisation --------------------------------------------------------------------

# Applied in order to lower-case text; each maps a way of saying something onto the one
# form the bank is indexed under.
_REWRITES = [
    (re.compile(r"\bit's\b"), "it is"),
    (re.compile(r"'"), ""),
    (re.compile(r"[^a-z0-9]+"), " "),
    (re.compile(r"\b(?:the|this|that|your|my) (?:secret |hidden |mystery )?(?:object|thing|item|word|answer)\b"), "it"),
    (re.compile(r"\b(is|does|can|could|would|will|do) (?:this|that)\b"), r"\1 it"),
    (re.compile(r"\bare they\b"), "is it"),
    (re.compile(r"\bdo they\b"), "does it"),
    (re.compile(r"\bthey\b"), "it"),
    (re.compile(r"\bpair of\b"), ""),
]
_PERSON_WORDS = frozenset({"i", "we", "someone", "somebody", "people", "person", "human", "humans"})
_DROPPED_WORDS = frozenset({"a", "an", "the"})
_FILLERS = frozenset({"so", "ok", "okay", "alright", "well", "hmm", "um", "and", "next", "now", "then",
                      "also", "please", "question"})


def normalise(text: str) -> str:
    """The lookup key of a question (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    words = ["you" if w in _PERSON_WORDS else w for w in text.split() if w not in _DROPPED_WORDS]
    while words and words[0] in _FILLERS:
        words.pop(0)
    while words and words[-1] in _FILLERS:
        words.pop()
    return " ".join(words)


# -- The table ------------------------------------------------------------------------


class TableError(ValueError):
    """A malformed knowledge table; the message names the file and the entry."""


class KnowledgeTable:
    """The objects, the question bank and the index that grounds questions.

    `questions` lists the askable meanings (every attribute, then every category, none
    negated) and `question_truths` their answers for every object, shape (questions,
    objects), for the scripted questioners.
    """

    def __init__(self, data: Mapping[str, Any], path: Path | str = "<table>"):
        self.path = str(path)
        self.categories: tuple[str, ...] = tuple(self._bank(data, "categories"))
        self.attributes: tuple[str, ...] = tuple(self._bank(data, "attributes"))
        self.guess_templates: tuple[str, ...] = tuple(self._strings(data.get("guess_templates"), "guess_templates"))
        if not self.guess_templates or any(t.count("{}") != 1 for t in self.guess_templates):
            raise TableError(f"{self.path}: guess_templates must be a non-empty list of texts with one {{}} each")
        entries = data.get("objects") or ()
        self.objects: tuple[TableObject, ...] = tuple(self._object(entry, i) for i, entry in enumerate(entries))
        if not self.objects:
            raise TableError(f"{self.path}: 'objects' must be a non-empty list")
        self.by_name = {obj.name: obj for obj in self.objects}
        # Every name and synonym, normalised, -> the object's name; and the words of all
        # of an object's names, which a guess of it may repeat (the source's `ignores`).
        self.name_index: dict[str, str] = {}
        self.name_words: dict[str, frozenset[str]] = {}
        self._build_names()
        self.phrasings: dict[Meaning, tuple[str, ...]] = {}
        for kind, section in ((ATTRIBUTE, "attributes"), (CATEGORY, "categories")):
            for key, entry in data[section].items():
                self.phrasings[Meaning(kind, key)] = (entry["question"], *entry["paraphrases"])
                if entry.get("negations"):
                    self.phrasings[Meaning(kind, key, True)] = tuple(entry["negations"])
        self.index = self._build_index()
        self._truths: dict[Meaning, np.ndarray] = {}
        # Scripted questioners reuse a few hundred phrasings; caching their keys keeps
        # data generation fast. Only short texts get here (see `parse`), so it stays small.
        self._lookup = functools.lru_cache(maxsize=8192)(self._meaning)

        self.questions = tuple(Meaning(ATTRIBUTE, a) for a in self.attributes) + tuple(
            Meaning(CATEGORY, c) for c in self.categories
        )
        self.question_truths = np.stack([self.truth(m) for m in self.questions])  # (questions, objects)

    # -- Loading and validation -----------------------------------------------------

    def _bank(self, data: Mapping[str, Any], section: str) -> dict[str, Any]:
        bank = data.get(section)
        if not isinstance(bank, dict) or not bank:
            raise TableError(f"{self.path}: '{section}' must be a non-empty mapping")
        for key, entry in bank.items():
            where = f"{section} entry {key!r}"
            if not isinstance(entry, dict) or not isinstance(entry.get("question"), str):
                raise TableError(f"{self.path}: {where} needs a 'question' text")
            self._strings(entry.get("paraphrases"), where + " paraphrases")
            self._strings(entry.get("negations", []), where + " negations")
        return bank

    def _strings(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
            raise TableError(f"{self.path}: {where} must be a list of non-empty texts")
        return value

    def _object(self, entry: Any, position: int) -> TableObject:
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"{self.path}: object {name!r} (entry {position})"
        if not isinstance(name, str) or not name.strip():
            raise TableError(f"{where}: needs a 'name' text")
        if entry.get("article") not in ARTICLES:
            raise TableError(f"{where}: 'article' must be one of {ARTICLES}")
        if entry.get("category") not in self.categories:
            valid = ", ".join(self.categories)
            raise TableError(f"{where}: unknown category {entry.get('category')!r}; valid: {valid}")
        synonyms = self._strings(entry.get("synonyms"), f"object {name!r} synonyms")
        synonym_articles = entry.get("synonym_articles", {})
        if not isinstance(synonym_articles, dict) or any(
            s not in synonyms or a not in ARTICLES for s, a in synonym_articles.items()
        ):
            raise TableError(f"{where}: 'synonym_articles' must map its synonyms to one of {ARTICLES}")
        values = entry.get("attributes")
        if not isinstance(values, dict):
            raise TableError(f"{where}: 'attributes' must be a mapping")
        missing = [a for a in self.attributes if a not in values]
        unknown = [a for a in values if a not in self.attributes]
        not_bool = [a for a, v in values.items() if not isinstance(v, bool)]
        for problem, names in (("missing", missing), ("unknown", unknown), ("non-boolean", not_bool)):
            if names:
                raise TableError(f"{where}: {problem} attribute(s) {', '.join(names)}")
        return TableObject(name, entry["article"], entry["category"], tuple(synonyms),
                           {a: values[a] for a in self.attributes}, dict(synonym_articles))

    def _build_names(self) -> None:
        for obj in self.objects:
            words: set[str] = set()
            for name in obj.names:
                key = normalise(name)
                if not key:
                    raise TableError(f"{self.path}: object {obj.name!r}: name {name!r} has no words left after normalising")
                if self.name_index.setdefault(key, obj.name) != obj.name:
                    raise TableError(
                        f"{self.path}: object {obj.name!r}: name {name!r} is already a name of {self.name_index[key]!r}"
                    )
                if key in GUESS_FRAME_WORDS or key in COUNTER_WORDS:
                    raise TableError(f"{self.path}: object {obj.name!r}: name {name!r} is a word of a guess's frame")
                words.update(key.split())
            self.name_words[obj.name] = frozenset(words)
        self._longest_name = max(len(key.split()) for key in self.name_index)

    def _build_index(self) -> dict[str, Meaning]:
        index: dict[str, Meaning] = {}
        owner: dict[str, str] = {}
        for meaning, texts in self.phrasings.items():
            source = f"{meaning.kind} {meaning.key!r}"
            for text in texts:
                key = normalise(text)
                if not key:
                    raise TableError(f"{self.path}: {source}: {text!r} has no words left after normalising")
                if index.setdefault(key, meaning) != meaning:
                    raise TableError(f"{self.path}: {source}: {text!r} reads the same as {owner[key]}")
                owner.setdefault(key, f"{source} ({text!r})")
                guessed = self._guess(key)
                if guessed is not None:
                    raise TableError(f"{self.path}: {source}: {text!r} reads as a guess of {guessed!r}")
        for obj in self.objects:
            for name in obj.names:
                for template in self.guess_templates:
                    text = template.format(obj.spoken(name))
                    key = normalise(text)
                    if key in index or self._guess(key) != obj.name:
                        raise TableError(
                            f"{self.path}: object {obj.name!r}: guess template {template!r} gives {text!r}, "
                            "which does not read as a guess of it"
                        )
        return index

    def _guess(self, key: str) -> str | None:
        """The object a normalised question guesses: the key ends with one of its names,
        not right after a verb's word (VERB_BEFORE_NAME), and every other word is a frame
        word, a word of its own names, or a counter word before "of" (see
        GUESS_FRAME_WORDS); None if there is no such object."""
        words = key.split()
        for n in range(min(len(words), self._longest_name), 0, -1):
            name = self.name_index.get(" ".join(words[-n:]))
            before = words[:-n]
            if name is None or (before and before[-1] in VERB_BEFORE_NAME):
                continue
            if self._frame_only(before, self.name_words[name]):
                return name
        return None

    @staticmethod
    def _frame_only(words: list[str], own_words: frozenset[str]) -> bool:
        for i, word in enumerate(words):
            if word in GUESS_FRAME_WORDS or word in own_words:
                continue
            if word in COUNTER_WORDS and i + 1 < len(words) and words[i + 1] == "of":
                continue
            return False
        return True

    # -- Questions --------------------------------------------------------------------

    def parse(self, text: str) -> Meaning | None:
        """What the question `text` asks, or None where it cannot be grounded."""
        if "?" not in text or len(text) > MAX_QUESTION_CHARS:
            return None
        return self._lookup(text)

    def _meaning(self, text: str) -> Meaning | None:
        key = normalise(text)
        if key in self.index:
            return self.index[key]
        guessed = self._guess(key)
        return None if guessed is None else Meaning(GUESS, guessed)

    def answer(self, obj: TableObject, meaning: Meaning) -> bool:
        """The true answer about `obj`."""
        if meaning.kind == ATTRIBUTE:
            value = obj.attributes[meaning.key]
        elif meaning.kind == CATEGORY:
            value = obj.category == meaning.key
        else:
            value = obj.name == meaning.key
        return value != meaning.negated

    def truth(self, meaning: Meaning) -> np.ndarray:
        """The answer for every object, in table order: bool array (objects,)."""
        if meaning not in self._truths:
            self._truths[meaning] = np.array([self.answer(obj, meaning) for obj in self.objects])
        return self._truths[meaning]

    def find(self, name: str) -> TableObject | None:
        """The object called `name` (or a synonym of it), if any."""
        found = self.name_index.get(normalise(name))
        return None if found is None else self.by_name[found]

    def say(self, meaning: Meaning, rng: np.random.Generator) -> str:
        """A question with this meaning in one of its phrasings, drawn with `rng`.

        Attribute questions are sometimes asked through a negation ("Is it natural?");
        the answer then flips, which every reader of the dialogue handles via `parse`.
        A guess names the object by its name, or now and then by a synonym.
        """
        if meaning.kind == GUESS:
            obj = self.by_name[meaning.key]
            name = obj.synonyms[int(rng.integers(len(obj.synonyms)))] if obj.synonyms and rng.random() < 0.25 else None
            template = self.guess_templates[int(rng.integers(len(self.guess_templates)))]
            return template.format(obj.spoken(name))
        texts = self.phrasings[meaning.positive()] + self.phrasings.get(Meaning(meaning.kind, meaning.key, True), ())
        return texts[int(rng.integers(len(texts)))]


@functools.cache
def load_table(path: Path | str = DATA_PATH) -> KnowledgeTable:
    """Read and validate the table once per path; a malformed file raises TableError."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise TableError(f"{path}: cannot read the knowledge table: {err}") from err
    if not isinstance(data, dict):
        raise TableError(f"{path}: the knowledge table must be a JSON object")
    return KnowledgeTable(data, path)


OBJECTS: tuple[str, ...] = tuple(obj.name for obj in load_table().objects)
"""The objects' names in the source's order: the per-item evaluation plays each once, in
this order, pinned with `reset(options={"object": name})`."""
