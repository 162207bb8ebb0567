"""How the Guess My City oracle reads a question: `parse` turns one line into a `Query`.

- A guess is `Is the city you are from X?`, lenient on case, spacing, accents, quotes
  and trailing punctuation, where X is one city's name or a listed alias (`Bombay` for
  Mumbai); and, as in the original, any question that ends with one city's name and
  whose other words are only a guess's frame (`GUESS_FRAME_WORDS`): "Is it Tokyo?",
  "Are you from Tokyo?", "Is your city Tokyo?", "Do you live in Tokyo?". Naming
  several cities, or a city plus other words, is not a guess: in the `Is the city you
  are from` form the oracle asks for one city at a time, in any other form ("Is it
  near Tokyo?") it gives a hint on how to guess, and nothing else. A name in that form
  that is no table city is a wrong guess.
- Otherwise the question's words are matched against the table's vocabulary (continents,
  regions, countries, provinces, languages, rivers, seas, climates, currencies, sports,
  foods, landmarks, cities), longest phrase first. One value asked about gets a yes/no
  answer; two or more ("Asia or Europe?") or none get the open answer; values of two
  different kinds ("a capital in Asia?") are not answered. With no value, keywords
  pick the topic (`KEYWORDS`, first match wins).
- Questions about the city's name, spelling, country ("What country are you in?") get
  a refusal; yes/no questions naming a country ("Is it in Japan?") are answered, also
  by a name two countries share ("Is it in Korea?").
- Anything else is unresolved (the oracle gives its one fallback answer), and so is
  text that is not a question (empty, several lines, over `MAX_QUESTION_CHARS`, not
  ending in `?`, no letter), which the environment flags as an invalid action.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple, Sequence

from lmrl_ray.envs.guess_city.cities import CLIMATES, CONTINENTS, normalise, table

# A question is one line of at most this many characters; longer text is not read.
MAX_QUESTION_CHARS = 300

# Everyday weather words in yes/no questions ("Is it cold?") and the climates they fit.
CLIMATE_WORDS = {
    "hot": {"tropical", "arid"},
    "warm": {"tropical", "arid", "semi-arid", "humid subtropical", "mediterranean"},
    "cold": {"continental"},
    "snowy": {"continental"},
    "snow": {"continental"},
    "freezing": {"continental"},
    "dry": {"arid", "semi-arid"},
    "desert": {"arid"},
    "humid": {"tropical", "humid subtropical"},
    "rainy": {"tropical", "oceanic"},
    "wet": {"tropical", "oceanic"},
    "mild": {"oceanic", "mediterranean", "highland"},
    "temperate": {"oceanic", "mediterranean", "humid subtropical"},
    "subtropical": {"humid subtropical"},
}
# Language names a question may use for a table language, and languages no table city
# speaks (so that "Do they speak Dutch?" gets an answer, not the fallback).
LANGUAGE_SYNONYMS = {
    "chinese": ("Mandarin", "Cantonese"),
    "persian": ("Farsi",),
    "bangla": ("Bengali",),
    "filipino": ("Tagalog",),
}
OTHER_LANGUAGES = (
    "Dutch", "Greek", "Hebrew", "Polish", "Swedish", "Hausa", "Igbo", "Kurdish", "Somali",
    "Nepali", "Sinhala", "Khmer", "Lao", "Afrikaans", "Catalan", "Dari", "Pashto", "Swahili",
    "Xhosa", "Yoruba", "Zulu",
)
SPORT_SYNONYMS = {"soccer": "football", "american football": "gridiron football", "hockey": "ice hockey"}
SUBREGION_SYNONYMS = {
    "eastern asia": "East Asia", "south east asia": "Southeast Asia", "southeastern asia": "Southeast Asia",
    "southern asia": "South Asia", "indian subcontinent": "South Asia", "western asia": "the Middle East",
    "northern africa": "North Africa", "western africa": "West Africa", "middle africa": "Central Africa",
    "eastern africa": "East Africa",
}
# "America" in a question means either of the two continents.
AMERICAS = "the Americas"
# Either-or phrases name the topic, not a value: "Is it north or south of the equator?"
HEMISPHERE_CHOICES = (
    "north or south of the equator", "northern or southern hemisphere", "east or west of greenwich",
    "east or west of the prime meridian", "eastern or western hemisphere",
)
HEMISPHERE_PHRASES = {
    "northern hemisphere": "northern", "north of the equator": "northern",
    "southern hemisphere": "southern", "south of the equator": "southern",
    "eastern hemisphere": "eastern", "east of greenwich": "eastern", "east of the prime meridian": "eastern",
    "western hemisphere": "western", "west of greenwich": "western", "west of the prime meridian": "western",
}

# Topic keywords, used only when a question names no value; the first topic found wins,
# so the more specific topics come first ("What should I eat if I visit?" is food).
KEYWORDS = (
    ("nickname", ("nickname", "nicknamed", "nicknames")),
    ("timezone", ("time zone", "timezone", "utc", "gmt", "what time")),
    ("currency", ("currency", "money", "cash", "pay with", "pay in")),
    ("language", ("language", "languages", "speak", "spoken", "tongue")),
    ("food", ("food", "foods", "dish", "dishes", "eat", "cuisine", "delicacy", "snack")),
    ("sport", ("sport", "sports", "team", "teams")),
    ("industry", ("industry", "industries", "economy", "business", "jobs", "work")),
    ("capital", ("capital",)),
    ("population", ("population", "how many people", "how big", "how large", "people live",
                    "inhabitants", "residents", "million")),
    ("river", ("river", "rivers")),
    ("coast", ("coast", "coastal", "coastline", "ocean", "sea", "beach", "beaches", "seaside", "port")),
    ("climate", ("weather", "climate", "temperature", "season", "seasons", "summer",
                 "summers", "winter", "winters", "rain")),
    ("landmark", ("landmark", "landmarks", "monument", "sight", "sights", "attraction", "attractions",
                  "tourist", "tourists", "visit", "famous for", "known for")),
    ("province", ("province", "state", "prefecture", "region of the country", "part of the country")),
    ("hemisphere", ("hemisphere", "hemispheres", "equator", "greenwich", "meridian")),
    ("subregion", ("part of the world", "region of the world", "where in the world", "area of the world",
                   "where is")),
    ("continent", ("continent",)),
)
# Keywords of these topics also come with questions about other topics ("Is it known
# for dim sum?"), so they do not make a question that names a value two-topic.
WEAK_TOPICS = frozenset({"landmark", "industry", "subregion"})
REFUSAL_KEYWORDS = (
    "name", "names", "called", "spell", "spelled", "spelling", "letter", "letters", "initial",
    "initials", "pronounce", "country", "nation", "nationality", "which city", "what city",
    "where are you from", "where do you live", "where do you come from", "identity", "reveal",
)

# The words a guess may hold besides the city's name. The original ends the game when
# its oracle says "Yes." to a question whose last words are the city's name
# (llm_rl_scripts/guess_city/env/data.py:90-92 and is_done, data.py:330-354); with a
# grounded oracle, "yes" means the question asks whether the city is X, so the frame is
# held to words that ask exactly that: no "near", "than", "or", "not".
GUESS_FRAME_WORDS = frozenset({
    "is", "it", "its", "the", "a", "city", "town", "hometown", "home", "you", "youre", "are", "am",
    "i", "my", "your", "from", "in", "of", "do", "does", "live", "come", "originally", "located",
    "based", "was", "were", "born", "grew", "up", "could", "can", "might", "would", "will", "be",
    "maybe", "perhaps", "possibly", "probably", "so", "then", "that", "this", "guess", "think",
    "called", "named", "right",
})

# Kinds of query that are not about a fact of the city.
GUESS, MULTI_GUESS_KIND, HINT, REFUSE, UNRESOLVED_KIND, INVALID = (
    "guess", "multi-guess", "hint", "refuse", "unresolved", "invalid",
)
UNGROUNDED = frozenset({UNRESOLVED_KIND, INVALID})


class Query(NamedTuple):
    """What a question asks: a topic (`intent`) and, for a yes/no question, the value
    asked about (None for an open question). Guesses carry the city's name, or None
    for a name that is no table city."""

    intent: str
    value: Any = None


def _strip_article(phrase: str) -> str:
    return phrase[4:] if phrase.startswith("the ") else phrase


@functools.lru_cache(maxsize=None)
def vocabulary() -> dict[tuple[str, ...], tuple[str, Any]]:
    """Normalised phrase (as words) -> (intent, value) for every value a question may name.
    The first registration of a phrase wins: languages before countries ("Spanish" is
    the language), cities before countries and rivers ("Singapore", "Moskva")."""
    vocab: dict[tuple[str, ...], tuple[str, Any]] = {}

    def add(phrase: str, intent: str, value: Any) -> None:
        words = tuple(_strip_article(normalise(phrase)).split())
        if words:
            vocab.setdefault(words, (intent, value))

    cities = table().cities
    for continent in CONTINENTS:
        add(continent, "continent", continent)
    for phrase in ("america", "americas", "the americas"):
        add(phrase, "continent", AMERICAS)
    for city in cities:
        add(city.subregion, "subregion", city.subregion)
    for phrase, subregion in SUBREGION_SYNONYMS.items():
        add(phrase, "subregion", subregion)
    for phrase in HEMISPHERE_CHOICES:
        add(phrase, "hemisphere", None)
    for phrase, hemisphere in HEMISPHERE_PHRASES.items():
        add(phrase, "hemisphere", hemisphere)
    for city in cities:
        for language in city.languages:
            add(language, "language", language)
    for phrase in LANGUAGE_SYNONYMS:
        add(phrase, "language", phrase)
    for language in OTHER_LANGUAGES:
        add(language, "language", language)
    for city in cities:
        for name in (city.name, *city.aliases):
            add(name, "city", city.name)
    owners: dict[str, set[str]] = {}
    for city in cities:
        for name in (city.country, *city.country_aliases):
            owners.setdefault(normalise(name), set()).add(city.country)
    for city in cities:
        for name in (city.country, *city.country_aliases):
            shared = owners[normalise(name)]
            # A name of two countries ("Korea") asks about both.
            add(name, "country", city.country if len(shared) == 1 else tuple(sorted(shared)))
    for city in cities:
        add(city.currency, "currency", city.currency)
        add(city.currency + "s", "currency", city.currency)
    add("renminbi", "currency", "yuan")
    add("rouble", "currency", "ruble")
    add("reais", "currency", "real")
    for city in cities:
        add(city.sport, "sport", city.sport)
    for phrase, sport in SPORT_SYNONYMS.items():
        add(phrase, "sport", sport)
    for climate in CLIMATES:
        add(climate, "climate", climate)
    for word in CLIMATE_WORDS:
        add(word, "climate", word)
    for city in cities:
        for intent in ("water", "river", "province", "landmark", "food"):
            value = getattr(city, intent)
            if value is None:
                continue
            answer_intent = "coast" if intent == "water" else intent
            add(value, answer_intent, value)
            add(re.sub(r"\s*\(.*?\)", "", value), answer_intent, value)
            if intent == "province" and value.endswith(" region"):
                add(value[: -len(" region")], answer_intent, value)
    for ocean in ("Pacific", "Atlantic"):
        add(ocean, "coast", f"the {ocean} Ocean")
    return vocab


@functools.lru_cache(maxsize=None)
def _longest_phrase() -> int:
    return max(len(words) for words in vocabulary())


def find_mentions(words: Sequence[str]) -> tuple[list[tuple[str, Any]], str]:
    """The values named in `words` (longest phrase first, left to right), and the text
    left over, with a `|` where a value was, for the keyword search."""
    vocab, longest = vocabulary(), _longest_phrase()
    mentions, rest, i = [], [], 0
    while i < len(words):
        for size in range(min(longest, len(words) - i), 0, -1):
            found = vocab.get(tuple(words[i : i + size]))
            if found is not None:
                mentions.append(found)
                rest.append("|")
                i += size
                break
        else:
            rest.append(words[i])
            i += 1
    return mentions, " ".join(rest)


@functools.lru_cache(maxsize=None)
def _longest_city_name() -> int:
    return max(len(name.split()) for name in table().by_name)


def _framed_guess(words: Sequence[str]) -> str | None:
    """The city whose name (or alias) ends `words` when the other words are only a
    guess's frame ("is it tokyo"), else None."""
    by_name = table().by_name
    for size in range(min(len(words), _longest_city_name()), 0, -1):
        city = by_name.get(" ".join(words[-size:]))
        if city is not None:
            return city.name if all(w in GUESS_FRAME_WORDS for w in words[:-size]) else None
    return None


def _names_a_city(words: Sequence[str]) -> bool:
    """Whether some run of `words` is a city's name or alias."""
    by_name = table().by_name
    return any(" ".join(words[i:j]) in by_name for i in range(len(words)) for j in range(i + 1, len(words) + 1))


def _has_phrase(text: str, phrase: str) -> bool:
    return re.search(r"(?<![a-z0-9])" + re.escape(phrase) + r"(?![a-z0-9])", text) is not None


_GUESS_FORM = re.compile(
    r"\s*is\s+the\s+city\s+(?:you\s+are|you['\u2019]?re)\s+from\s+(.+?)[\s?.!]*", re.I | re.S
)
_FEWER = ("less", "fewer", "under", "below", "smaller")
_POPULATION = re.compile(
    r"\b(more|over|above|greater|bigger|larger|at least|less|fewer|under|below|smaller)"
    r"(?: than)? (\d{1,3}) million\b"
)


def parse(text: str) -> Query:
    """What the utterance `text` asks (see the module docstring)."""
    text = text.strip()
    if len(text) > MAX_QUESTION_CHARS or "\n" in text or "\r" in text:
        return Query(INVALID)
    return _parse_line(text)


@functools.lru_cache(maxsize=1 << 16)
def _parse_line(text: str) -> Query:
    guess = _GUESS_FORM.fullmatch(text)
    if guess:
        city = table().by_name.get(normalise(guess.group(1)))
        if city is not None:
            return Query(GUESS, city.name)
        if _names_a_city(normalise(guess.group(1)).split()):
            return Query(MULTI_GUESS_KIND)
    if not text.endswith("?") or not any(ch.isalpha() for ch in text):
        return Query(INVALID)
    framed = _framed_guess(normalise(text).split())
    if framed is not None:
        return Query(GUESS, framed)
    query = _parse_question(normalise(text))
    if guess and query.intent == UNRESOLVED_KIND:
        return Query(GUESS, None)  # a guess of a city outside the table: it is not the one
    return query


def _parse_question(text: str) -> Query:
    words = text.split()
    if not words:
        return Query(UNRESOLVED_KIND)
    mentions, rest = find_mentions(words)
    intents = {intent for intent, _ in mentions}
    topics = {intent for intent, keywords in KEYWORDS if any(_has_phrase(rest, k) for k in keywords)}
    if len(intents) > 1 or (intents and (topics - WEAK_TOPICS) - intents - {"city"}):
        return Query(UNRESOLVED_KIND)  # two topics at once ("Is it a capital in Asia?")
    if intents:
        intent = intents.pop()
        if intent == "city":
            return Query(HINT)
        values = list(dict.fromkeys(value for _, value in mentions if value is not None))
        if len(values) == 1:
            return Query(intent, values[0])
        return Query(REFUSE) if intent == "country" else Query(intent)
    for intent, _ in KEYWORDS:
        if intent in topics:
            if intent == "population":
                numbers = _POPULATION.search(text)
                if numbers:
                    direction = "less" if numbers.group(1) in _FEWER else "more"
                    return Query(intent, (direction, int(numbers.group(2))))
            return Query(intent)
    if any(_has_phrase(rest, k) for k in REFUSAL_KEYWORDS):
        return Query(REFUSE)
    return Query(UNRESOLVED_KIND)
