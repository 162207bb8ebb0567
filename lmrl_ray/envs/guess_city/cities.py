"""The Guess My City table: the original's 100 cities and their facts, checked on load.

The cities are the original LMRL-Gym's (`llm_rl_scripts/guess_city/env/global_cities.txt`),
in its order, all 100 of them: the original's loader skips the file's first city, Seoul,
by an off-by-one (`data.py:54` starts at line 2 of a file with one header line), which
we do not copy. The facts (`data/cities.json`) are our own, written for the grounded
oracle. A city row names its country, whose entry supplies the continent, region,
currency and the country's names unless the row overrides them. A malformed table fails
on load, naming its file and the entry. `city_names` is the evaluation order.

What the oracle never says before a correct guess are a city's *hidden names*: its
name, its aliases, its country's names and demonyms. `leaks` finds them in a text: the
table's checks use it, and so does the oracle's last guard. Names are compared in
`normalise`d form.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

TABLE_PATH = Path(__file__).parent.parent / "data" / "cities.json"

CONTINENTS = ("Asia", "Africa", "Europe", "North America", "South America", "Oceania")
CAPITALS = ("national", "provincial", "none")
# The table's climates, and how the oracle describes each.
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


def city_names() -> tuple[str, ...]:
    """Every city's name, in the table's order, which is the original's: the per-item
    evaluation plays each once in this order, pinning it with `options={"city": name}`."""
    return tuple(city.name for city in table().cities)


def city_named(name: str) -> City:
    """The city with this name or alias (any case or accents); unknown names raise ValueError."""
    city = table().by_name.get(normalise(name))
    if city is None:
        raise ValueError(f"unknown city {name!r}; valid cities: {', '.join(c.name for c in table().cities)}")
    return city
