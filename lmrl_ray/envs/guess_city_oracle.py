"""The Guess My City oracle: a grounded simulator that answers from our city table.

The paper's oracle was a language model distilled from GPT-3.5 dialogues, and agents
learned to make it say the city's name. This one reads the agent's question with a few
rules, finds the fact it asks about in `data/cities.json` (our own table of the 100
most populous cities) and answers from templates, in several phrasings drawn with the
episode's seeded generator. Nothing the agent writes is ever copied into an answer.

How a question is read (`parse`):
- A guess is exactly `Is the city you are from X?`, lenient on case, spacing, accents,
  quotes and trailing punctuation; X must be one city's name or a listed alias
  (`Bombay` for Mumbai). Naming several cities, or a city plus more words, is not a
  guess: the oracle asks for one city at a time. A name that is no table city is a
  wrong guess. Other questions that name a city ("Is it Tokyo?") get a hint on how to
  guess, and nothing else.
- Otherwise the question's words are matched against the table's vocabulary (continents,
  regions, countries, provinces, languages, rivers, seas, climates, currencies, sports,
  foods, landmarks, cities), longest phrase first. One value asked about gets a yes/no
  answer; two or more ("Asia or Europe?") or none get the open answer; values of two
  different kinds ("a capital in Asia?") are not answered. With no value, keywords
  pick the topic (`KEYWORDS`, first match wins).
- Questions about the city's name, spelling, country ("What country are you in?") get
  a refusal; yes/no questions naming a country ("Is it in Japan?") are answered.
- Anything else gets the one fallback answer `UNRESOLVED`, and so does text that is not
  a question (empty, several lines, over `MAX_QUESTION_CHARS`, not ending in `?`, no
  letter), which the environment flags as an invalid action. Both count as unresolved.

What is never said: the city's name, its aliases, its country's names and demonyms,
until the agent has guessed the city. Facts that would say them are withheld by topic
(a river named after the city, a province of the same name, a language named after the
country, which is described instead), and one last guard (`leaks`) replaces any answer
that still contains one with `WITHHELD`.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from lmrl_ray.envs.base import Turn
from lmrl_ray.envs.dialogue import Simulator

TABLE_PATH = Path(__file__).parent / "data" / "cities.json"

# A question is one line of at most this many characters; longer text is not read.
MAX_QUESTION_CHARS = 300

UNRESOLVED = "I'm not sure how to answer that."
WITHHELD = "I can't answer that without giving my city away."
REFUSALS = (
    "I can't tell you that, but ask me anything else about my city.",
    "That would give it away! Ask me something else.",
)
GUESS_HINT = "To make a guess, ask exactly: Is the city you are from <city>?"
MULTI_GUESS = "Please guess one city at a time, by its name alone."
WRONG_GUESS = ("No, that's not my city.", "No, that's not it.", "Wrong guess, sorry.")
YES = ("Yes.", "Yes, that's right.", "That's correct, yes.")
NO = ("No.", "No, that's not right.", "No, I'm afraid not.")

CONTINENTS = ("Asia", "Africa", "Europe", "North America", "South America", "Oceania")
CAPITALS = ("national", "provincial", "none")
CLIMATES = {
    "tropical": "hot and humid all year, with a rainy season",
    "arid": "a desert climate where it hardly ever rains",
    "semi-arid": "dry most of the year, with hot summers",
    "humid subtropical": "hot, humid summers and cool winters",
    "mediterranean": "warm, dry summers and mild, wet winters",
    "oceanic": "mild and often grey, with rain all through the year",
    "continental": "warm summers and cold, snowy winters",
    "highland": "spring-like all year thanks to its altitude",
}
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
# speaks (so that "Do they speak German?" gets an answer, not the fallback).
LANGUAGE_SYNONYMS = {
    "chinese": ("Mandarin", "Cantonese"),
    "persian": ("Farsi",),
    "bangla": ("Bengali",),
    "filipino": ("Tagalog",),
}
OTHER_LANGUAGES = (
    "German", "Dutch", "Greek", "Hebrew", "Polish", "Swedish", "Ukrainian", "Hausa",
    "Igbo", "Kurdish", "Somali", "Nepali", "Sinhala", "Khmer", "Lao",
)
SPORT_SYNONYMS = {"soccer": "football", "american football": "gridiron football", "hockey": "ice hockey"}
SUBREGION_SYNONYMS = {
    "eastern asia": "East Asia", "south east asia": "Southeast Asia", "southeastern asia": "Southeast Asia",
    "southern asia": "South Asia", "indian subcontinent": "South Asia", "western asia": "the Middle East",
    "northern africa": "North Africa", "western africa": "West Africa", "middle africa": "Central Africa",
    "eastern africa": "East Africa",
}
AMERICAS = "the Americas"
HEMISPHERES = ("northern", "southern", "eastern", "western")
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
# Cities within this many degrees of longitude of Greenwich are "on the prime meridian".
MERIDIAN_DEGREES = 0.5
POPULATION_THRESHOLDS = (5, 10, 15, 20)

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

# Kinds of query that are not about a fact of the city.
GUESS, MULTI_GUESS_KIND, HINT, REFUSE, UNRESOLVED_KIND, INVALID = (
    "guess", "multi-guess", "hint", "refuse", "unresolved", "invalid",
)
UNGROUNDED = frozenset({UNRESOLVED_KIND, INVALID})


class CityTableError(ValueError):
    """The city table is malformed; the message names the file and the entry."""


@dataclass(frozen=True, eq=False)
class City:
    """One row of the table, with its country's facts filled in. Hashed by identity."""

    name: str
    aliases: tuple[str, ...]
    country: str
    country_aliases: tuple[str, ...]
    continent: str
    subregion: str
    province: str | None
    lat: float
    lon: float
    coastal: bool
    water: str | None
    river: str | None
    climate: str
    languages: tuple[str, ...]
    spoken: tuple[str, ...]
    """The languages as the oracle says them: a language named after the country is described."""
    population_millions: float
    capital: str
    landmark: str
    food: str
    utc_offset: float
    currency: str
    sport: str
    industry: str
    nickname: str | None

    @property
    def hidden_names(self) -> tuple[str, ...]:
        """What the oracle never says: the city's names and its country's names and demonyms."""
        return (self.name, *self.aliases, self.country, *self.country_aliases)


@dataclass(frozen=True, eq=False)
class Table:
    cities: tuple[City, ...]
    language_descriptions: dict[str, str]
    path: Path

    @functools.cached_property
    def by_name(self) -> dict[str, City]:
        """Normalised name or alias -> city."""
        return {normalise(n): c for c in self.cities for n in (c.name, *c.aliases)}


# -- Text ------------------------------------------------------------------------------

# Letters that Unicode does not decompose into a base letter plus an accent.
_FOLD = str.maketrans({"ı": "i", "ø": "o", "æ": "ae", "ß": "ss", "đ": "d", "ł": "l", "œ": "oe"})


def normalise(text: str) -> str:
    """Lower-case ASCII words separated by single spaces: accents, apostrophes and
    punctuation go ("Xi'an" -> "xian", "São Paulo" -> "sao paulo")."""
    text = unicodedata.normalize("NFKD", text.translate(_FOLD))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = text.replace("'", "").replace("\u2019", "")
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def _name_pattern(names: Sequence[str]) -> re.Pattern:
    """Matches any of `names` as words of normalised text. Names of four letters or more
    also match as the start of a word, which catches derived words ("Kabuli",
    "Cantonese", "Brazilian"); shorter ones ("LA", "Rio") only as whole words."""
    parts = []
    for name in sorted({normalise(n) for n in names if normalise(n)}, key=len, reverse=True):
        if len(name.replace(" ", "")) >= 4:
            parts.append(r"\b" + re.escape(name))
        else:
            parts.append(r"\b" + re.escape(name) + r"s?\b")
    return re.compile("|".join(parts))


@functools.lru_cache(maxsize=None)
def _hidden_pattern(city: City) -> re.Pattern:
    return _name_pattern(city.hidden_names)


def leaks(text: str, city: City) -> bool:
    """Whether `text` names `city`, one of its aliases, its country or a demonym."""
    return _hidden_pattern(city).search(normalise(text)) is not None


# -- The table ---------------------------------------------------------------------------

_CITY_FIELDS = {
    "name": str, "aliases": list, "country": str, "province": (str, type(None)),
    "lat": (int, float), "lon": (int, float), "coastal": bool, "water": (str, type(None)),
    "river": (str, type(None)), "climate": str, "languages": list,
    "population_millions": (int, float), "capital": str, "landmark": str, "food": str,
    "utc_offset": (int, float), "sport": str, "industry": str, "nickname": (str, type(None)),
}
_OVERRIDES = ("continent", "subregion", "currency")
_COUNTRY_FIELDS = {"aliases": list, "continent": str, "subregion": str, "currency": str}
# These facts are answered by name, so the table must state them without hidden names.
_MUST_NOT_LEAK = ("landmark", "food", "sport", "industry", "nickname")


def load_table(path: str | Path = TABLE_PATH) -> Table:
    """Read and validate the table; a malformed one raises CityTableError naming the entry."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CityTableError(f"{path}: cannot read the city table: {err}") from None
    if not isinstance(raw, dict) or not all(k in raw for k in ("countries", "language_descriptions", "cities")):
        raise CityTableError(f"{path}: expected an object with countries, language_descriptions and cities")
    countries = raw["countries"]
    for country, facts in countries.items():
        _check_fields(path, f"country {country!r}", facts, _COUNTRY_FIELDS, ())
    descriptions = dict(raw["language_descriptions"])
    cities = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(raw["cities"]):
        where = f"entry {i} ({entry.get('name', '?') if isinstance(entry, dict) else '?'})"
        _check_fields(path, where, entry, _CITY_FIELDS, _OVERRIDES)
        if entry["country"] not in countries:
            raise CityTableError(f"{path}: {where}: country {entry['country']!r} is not in countries")
        city = _city(entry, countries[entry["country"]], descriptions)
        _check_city(path, where, city, descriptions)
        for name in (city.name, *city.aliases):
            key = normalise(name)
            if seen.get(key, city.name) != city.name:
                raise CityTableError(f"{path}: {where}: name {name!r} is also used by {seen[key]}")
            seen[key] = city.name
        cities.append(city)
    if not cities:
        raise CityTableError(f"{path}: the table has no cities")
    return Table(tuple(cities), descriptions, path)


def _check_fields(path: Path, where: str, entry: Any, fields: dict, optional: Sequence[str]) -> None:
    if not isinstance(entry, dict):
        raise CityTableError(f"{path}: {where}: expected an object")
    missing = sorted(set(fields) - set(entry))
    unknown = sorted(set(entry) - set(fields) - set(optional))
    if missing or unknown:
        raise CityTableError(f"{path}: {where}: missing fields {missing}, unknown fields {unknown}")
    for key, kind in fields.items():
        if not isinstance(entry[key], kind) or (kind is not bool and isinstance(entry[key], bool)):
            raise CityTableError(f"{path}: {where}: field {key!r} has the wrong type ({entry[key]!r})")
        if isinstance(entry[key], str) and not entry[key].strip():
            raise CityTableError(f"{path}: {where}: field {key!r} is empty")
        if isinstance(entry[key], list) and not all(isinstance(x, str) and x.strip() for x in entry[key]):
            raise CityTableError(f"{path}: {where}: field {key!r} must be a list of names")
    for key in optional:
        if key in entry and not (isinstance(entry[key], str) and entry[key].strip()):
            raise CityTableError(f"{path}: {where}: field {key!r} must be a non-empty string")


def _city(entry: dict, country: dict, descriptions: dict[str, str]) -> City:
    fields = {k: entry[k] for k in _CITY_FIELDS}
    fields.update({k: entry.get(k, country[k]) for k in _OVERRIDES})
    fields["aliases"] = tuple(entry["aliases"])
    fields["languages"] = tuple(entry["languages"])
    fields["spoken"] = fields["languages"]
    fields["country_aliases"] = tuple(country["aliases"])
    fields["lat"], fields["lon"] = float(entry["lat"]), float(entry["lon"])
    fields["population_millions"] = float(entry["population_millions"])
    fields["utc_offset"] = float(entry["utc_offset"])
    city = City(**fields)
    spoken = tuple(descriptions.get(lang, lang) if leaks(lang, city) else lang for lang in city.languages)
    return replace(city, spoken=spoken)


def _check_city(path: Path, where: str, city: City, descriptions: dict[str, str]) -> None:
    problems = []
    if city.continent not in CONTINENTS:
        problems.append(f"continent {city.continent!r} is not one of {', '.join(CONTINENTS)}")
    if city.climate not in CLIMATES:
        problems.append(f"climate {city.climate!r} is not one of {', '.join(CLIMATES)}")
    if city.capital not in CAPITALS:
        problems.append(f"capital {city.capital!r} is not one of {', '.join(CAPITALS)}")
    if not (-90 <= city.lat <= 90 and -180 <= city.lon <= 180):
        problems.append(f"lat/lon {city.lat}, {city.lon} out of range")
    if not 0 < city.population_millions < 100:
        problems.append(f"population_millions {city.population_millions} out of range")
    if not (-12 <= city.utc_offset <= 14 and (city.utc_offset * 4).is_integer()):
        problems.append(f"utc_offset {city.utc_offset} is not a time zone")
    if not city.languages:
        problems.append("no languages")
    for key in _MUST_NOT_LEAK:
        value = getattr(city, key)
        if value is not None and leaks(value, city):
            problems.append(f"{key} {value!r} contains the city's or country's name")
    for language in city.languages:
        if leaks(language, city):
            description = descriptions.get(language)
            if description is None:
                problems.append(f"language {language!r} names the country: add it to language_descriptions")
            elif leaks(description, city):
                problems.append(f"the description of {language!r} names the city or country")
    if problems:
        raise CityTableError(f"{path}: {where}: " + "; ".join(problems))


@functools.lru_cache(maxsize=None)
def table() -> Table:
    """The packaged table, loaded and validated once."""
    return load_table(TABLE_PATH)


def city_named(name: str) -> City:
    """The city with this name or alias (any case or accents); unknown names raise ValueError."""
    city = table().by_name.get(normalise(name))
    if city is None:
        raise ValueError(f"unknown city {name!r}; valid cities: {', '.join(c.name for c in table().cities)}")
    return city


# -- Reading questions -------------------------------------------------------------------


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
    for phrase, languages in LANGUAGE_SYNONYMS.items():
        add(phrase, "language", phrase)
    for language in OTHER_LANGUAGES:
        add(language, "language", language)
    for city in cities:
        for name in (city.name, *city.aliases):
            add(name, "city", city.name)
    for city in cities:
        for name in (city.country, *city.country_aliases):
            add(name, "country", city.country)
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


# -- Answering -----------------------------------------------------------------------------


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _safe(value: str | None, city: City) -> str | None:
    """`value` if it can be said to an agent still guessing `city`, else None."""
    return None if value is None or leaks(value, city) else value


def _climate_name(climate: str) -> str:
    return "Mediterranean" if climate == "mediterranean" else climate


def _utc(offset: float) -> str:
    hours, minutes = int(abs(offset)), int(round(abs(offset) % 1 * 60))
    return ("-" if offset < 0 else "+") + str(hours) + (f":{minutes:02d}" if minutes else "")


def _population_band(millions: float) -> tuple[str, ...]:
    if millions >= 20:
        return ("More than 20 million people live there.",
                "It's enormous: over 20 million people live in its metro area.")
    if millions >= 10:
        return ("Between 10 and 20 million people live there.", "It's a megacity: between 10 and 20 million people.")
    if millions >= 5:
        return ("Between 5 and 10 million people live there.", "Its metro area has between 5 and 10 million people.")
    return ("Fewer than 5 million people live there.", "Its metro area has under 5 million people.")


def _east_west(city: City) -> str | None:
    if abs(city.lon) < MERIDIAN_DEGREES:
        return None
    return "eastern" if city.lon > 0 else "western"


def open_answer(city: City, intent: str) -> tuple[str, ...]:
    """The phrasings of the answer to an open question about `intent`."""
    if intent == "continent":
        c = city.continent
        return (f"It's in {c}.", f"My city is in {c}.", f"It's on the continent of {c}.")
    if intent == "subregion":
        r = city.subregion
        return (f"It's in {r}.", f"It's a city of {r}.", f"You'd find it in {r}.")
    if intent == "hemisphere":
        ns = "northern" if city.lat > 0 else "southern"
        ew = _east_west(city)
        side = "right on the prime meridian" if ew is None else f"{ew[:-3]} of the prime meridian"
        return (f"It's in the {ns} hemisphere, {side}.", f"It lies in the {ns} hemisphere, {side}.")
    if intent == "coast":
        water = _safe(city.water, city)
        if city.coastal and water:
            return (f"Yes, it's on the coast, on {water}.", f"Yes, it's a coastal city on {water}.")
        if city.coastal:
            return ("Yes, it's on the coast.", "Yes, it's a coastal city.")
        if water:
            return (f"It's not on the sea, but it lies on {water}.", f"It's inland, but right on {water}.")
        return ("No, it's inland.", "No, it isn't on the coast.", "No, it's not by the sea.")
    if intent == "river":
        river = _safe(city.river, city)
        if river:
            return (f"Yes, {river} runs through it.", f"Yes, it sits on {river}.")
        if city.river:
            return ("Yes, a big river runs through it, but its name would give my city away.",)
        return ("No big river runs through it.", "No, it isn't on a major river.")
    if intent == "climate":
        name, desc = _climate_name(city.climate), CLIMATES[city.climate]
        return (f"The climate is {name}: {desc}.", f"Its climate is {name}: {desc}.",
                f"Weather-wise it's {name}: {desc}.")
    if intent == "language":
        langs = _join(city.spoken)
        return (f"People there mainly speak {langs}.", f"Most people there speak {langs}.",
                f"You'd mostly hear {langs} there.")
    if intent == "food":
        f = city.food
        return (f"It's famous for {f}.", f"You have to try {f} there.", f"The local favourite is {f}.")
    if intent == "landmark":
        s = city.landmark
        return (f"A famous landmark is {s}.", f"Visitors go to see {s}.", f"Its best-known sight is {s}.")
    if intent == "capital":
        if city.capital == "national":
            return ("Yes, it's the national capital.", "Yes, it's the capital of its country.")
        if city.capital == "provincial":
            return ("It's not the national capital, but it is the capital of its state or province.",
                    "Not of the country, but it's a state or provincial capital.")
        return ("No, it isn't a capital.", "No, it's not a capital city.")
    if intent == "population":
        return _population_band(city.population_millions)
    if intent == "province":
        if city.province is None:
            return ("It isn't part of any state or province; it is a division of its own.",
                    "It's governed on its own, not as part of a state or province.")
        province = _safe(city.province, city)
        if province is None:
            return ("Its state or province has the same name as the city.",)
        return (f"It's in {province}.", f"It lies in {province}.")
    if intent == "timezone":
        z = _utc(city.utc_offset)
        return (f"It's on UTC{z}.", f"The time there is UTC{z}.", f"Its time zone is UTC{z}.")
    if intent == "currency":
        money = _safe(city.currency, city)
        if money is None:
            return ("Its currency is named after the country, so I'd better not say.",)
        return (f"The currency is the {money}.", f"People pay with the {money}.", f"They use the {money}.")
    if intent == "sport":
        s = city.sport
        return (f"The favourite sport there is {s}.", f"People there love {s}.",
                f"{s[0].upper() + s[1:]} is the big sport there.")
    if intent == "industry":
        s = city.industry
        return (f"It's known for {s}.", f"The economy is big on {s}.", f"Lots of people work in {s}.")
    if intent == "nickname":
        if city.nickname is None:
            return ("It doesn't really have a well-known nickname.", "Not one that I know of.")
        n = city.nickname
        return (f"People call it {n}.", f"Its nickname is {n}.", f"It's sometimes called {n}.")
    raise ValueError(f"guess-city: no open answer for intent {intent!r}")


def yes_no_answer(city: City, intent: str, value: Any) -> tuple[str, ...]:
    """The phrasings of the answer to "Is it <value>?" about `intent`."""
    if intent == "hemisphere" and value in ("eastern", "western") and _east_west(city) is None:
        return ("It sits right on the prime meridian.",)
    if intent == "continent":
        americas = ("North America", "South America")
        truth = city.continent in americas if value == AMERICAS else city.continent == value
    elif intent == "hemisphere":
        truth = {"northern": city.lat > 0, "southern": city.lat < 0}.get(value, _east_west(city) == value)
    elif intent == "language":
        truth = any(lang in LANGUAGE_SYNONYMS.get(value, (value,)) for lang in city.languages)
    elif intent == "climate":
        truth = city.climate in CLIMATE_WORDS.get(value, {value})
    elif intent == "population":
        direction, millions = value
        people = city.population_millions
        truth = people > millions if direction == "more" else people < millions
    elif intent == "coast":
        truth = city.water == value
    else:
        truth = getattr(city, intent) == value
    return YES if truth else NO


@functools.lru_cache(maxsize=1 << 17)
def answer(city: City, query: Query) -> tuple[str, ...]:
    """The phrasings of the oracle's answer to `query` when the hidden city is `city`.

    All phrasings carry the same content; after a correct guess the city is named, and
    every other answer passes the final guard: one that names a hidden name is replaced."""
    intent, value = query
    if intent == GUESS:
        return (f"Yes, I am from {city.name}!",) if value == city.name else WRONG_GUESS
    constant = {
        MULTI_GUESS_KIND: (MULTI_GUESS,), HINT: (GUESS_HINT,), REFUSE: REFUSALS,
        UNRESOLVED_KIND: (UNRESOLVED,), INVALID: (UNRESOLVED,),
    }
    if intent in constant:
        variants = constant[intent]
    elif value is None:
        variants = open_answer(city, intent)
    else:
        variants = yes_no_answer(city, intent, value)
    if any(leaks(v, city) for v in variants):
        return (WITHHELD,)
    return variants


class GroundedCityOracle(Simulator):
    """The grounded simulator of Guess My City; the secret is a `City`."""

    kind = "grounded"

    def reply(self, transcript: Sequence[Turn]) -> str:
        query = parse(transcript[-1].text)
        if query.intent in UNGROUNDED:
            self.unresolved += 1
        variants = answer(self.secret, query)
        return variants[int(self.rng.integers(len(variants)))]
