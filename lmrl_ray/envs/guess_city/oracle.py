"""The Guess My City oracle: a grounded simulator that answers from our city table.

The paper's oracle was a language model distilled from GPT-3.5 dialogues, and agents
learned to make it say the city's name. This one reads the agent's question with a few
rules (`reader.parse`), finds the fact it asks about in the table (`cities`) and
answers from templates, in several phrasings drawn with the episode's seeded
generator. Nothing the agent writes is ever copied into an answer.

What is never said: the city's name, its aliases, its country's names and demonyms,
until the agent has guessed the city. Facts that would say them are withheld by topic
(a river named after the city, a province of the same name, a language named after the
country, which is described instead), and one last guard (`leaks`) replaces any answer
that still contains one with `WITHHELD`.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

from lmrl_ray.envs.base import Turn
from lmrl_ray.envs.dialogue import Simulator
from lmrl_ray.envs.guess_city.cities import CLIMATES, City, leaks
from lmrl_ray.envs.guess_city.reader import (
    AMERICAS,
    CLIMATE_WORDS,
    GUESS,
    HINT,
    INVALID,
    LANGUAGE_SYNONYMS,
    MULTI_GUESS_KIND,
    REFUSE,
    UNGROUNDED,
    UNRESOLVED_KIND,
    Query,
    parse,
)

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

# Cities within this many degrees of longitude of Greenwich are "on the prime meridian".
MERIDIAN_DEGREES = 0.5


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
    elif intent == "country" and isinstance(value, tuple):  # a name two countries share
        truth = city.country in value
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
