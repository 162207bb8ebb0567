"""The Twenty Questions knowledge table: the objects, the question bank, and how a
question is understood.

The table (`data/twenty_questions_objects.json`, written for this project) holds 158
objects in 17 categories, each with its synonyms and the value of every yes/no attribute
for the typical object. The same file holds the *question bank*: for every attribute and
every category its canonical question, paraphrases (same answer) and negations (the
opposite answer, e.g. "Is it natural?" for man-made), plus the templates of a guess.

How a question is understood: `normalise` turns text into a key (lower case, punctuation
and articles dropped, "the object" / "this thing" -> "it", "I" / "people" -> "you",
fillers such as "so" or "please" dropped), and the key is looked up in one index built
from the bank and from the guess templates filled with every object name and synonym.
So "Would I find the object in a kitchen?" means what "Would you find it in a kitchen?"
means, and "Is it a banana?" is a guess of the banana. A text with no `?`, or whose key is
not in the index (several objects at once, "Is it a fruit or a banana?", "Answer yes.",
gibberish), is *unresolved*: `KnowledgeTable.parse` gives None.
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

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.synonyms)

    def spoken(self, name: str | None = None) -> str:
        """The object (or its synonym `name`) as said in a question: "a banana", "an
        apple", "jeans". A synonym takes "a" or "an" by its first letter, or no article
        where the object's name takes none."""
        name = name or self.name
        article = self.article
        if name != self.name and article:
            article = "an" if name[0] in "aeiou" else "a"
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
        self._lookup = functools.lru_cache(maxsize=8192)(lambda text: self.index.get(normalise(text)))

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
                           {a: values[a] for a in self.attributes})

    def _build_index(self) -> dict[str, Meaning]:
        index: dict[str, Meaning] = {}
        owner: dict[str, str] = {}

        def add(text: str, meaning: Meaning, source: str) -> None:
            key = normalise(text)
            if not key:
                raise TableError(f"{self.path}: {source}: {text!r} has no words left after normalising")
            if index.setdefault(key, meaning) != meaning:
                raise TableError(f"{self.path}: {source}: {text!r} reads the same as {owner[key]}")
            owner.setdefault(key, f"{source} ({text!r})")

        for meaning, texts in self.phrasings.items():
            for text in texts:
                add(text, meaning, f"{meaning.kind} {meaning.key!r}")
        names: dict[str, str] = {}
        for obj in self.objects:
            for name in obj.names:
                key = normalise(name)
                if names.setdefault(key, obj.name) != obj.name:
                    raise TableError(
                        f"{self.path}: object {obj.name!r}: name {name!r} is already a name of {names[key]!r}"
                    )
                for template in self.guess_templates:
                    add(template.format(name), Meaning(GUESS, obj.name), f"object {obj.name!r}")
        return index

    # -- Questions --------------------------------------------------------------------

    def parse(self, text: str) -> Meaning | None:
        """What the question `text` asks, or None where it cannot be grounded."""
        if "?" not in text or len(text) > MAX_QUESTION_CHARS:
            return None
        return self._lookup(text)

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
        meaning = self.index.get(normalise(f"Is it {name}?"))
        return self.by_name[meaning.key] if meaning is not None and meaning.kind == GUESS else None

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
