"""The Car Dealer buyer: a grounded simulator of a shopper with a hidden persona.

The paper's buyer was a language model distilled from GPT-3.5 dialogues, and reviewers
found that sellers could talk it into rewards. This buyer is rule based: it reads the
seller's text for a car (brand, type), features, a sticker price (MSRP), an asking price,
discounts, agreement and questions, keeps the state of the negotiation, and answers in
its persona's tone from several phrasings per intent, drawn with the episode's seeded
generator. Nothing the seller writes reaches the buyer's lines verbatim (they are built
from our templates, catalog names and the buyer's own numbers), so a seller can never
put an `Output:` line into the buyer's turn.

What the buyer pays is bounded by its hidden *willingness to pay* W for the car on the
table (see `willingness`); it accepts an asking price P only when P is credible and
P <= W * min(1, theta + delta * rounds), where `rounds` counts the earlier seller turns
that had a price on the table: a haggler starts low and gives in over time, never
above W. Above that threshold it counters below it. It leaves (rejects) when its
patience runs out, and at the turn cap.

The catalog (`data/cars.json`, our own) says which brand sells which types, the MSRP
range [base trim, top trim] of each (brand, type) and the price of each optional
feature. The MSRP of the car on the table is the sticker the seller quoted for it
(the first quote counts) or, unquoted, the base trim; in both cases at least the base
plus the features the seller says the car has, and clipped to the catalog's range.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lmrl_ray.envs.base import Turn
from lmrl_ray.envs.dialogue import Simulator

CATALOG_PATH = Path(__file__).parent / "data" / "cars.json"

PERSONALITIES = (
    "abusive", "angry", "insulting", "polite", "respectful",
    "rude", "sarcastic", "talkative", "toxic", "uncommunicative",
)
STRATEGIES = ("loves discounts", "wants all features", "impatient")
PERSONA_KEYS = ("personality", "brand", "type", "features", "budget", "strategy")
BUDGET_RANGE = (10_000, 90_000)
MAX_WISHED_FEATURES = 4

# Seller text beyond this many characters is not read (the buyer says so): an LM seller
# speaks one line, and a cap keeps the regular expressions cheap on enormous input.
MAX_READ_CHARS = 1_000
# Amounts above this are jokes, not car prices; digits are counted before int() so a
# 5,000-digit number neither slows down nor trips Python's int-conversion limit.
MAX_CREDIBLE_AMOUNT = 10_000_000


# -- Catalog ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Catalog:
    """Brands, types, feature prices and MSRP ranges, as read from `cars.json`.

    Compared and hashed by identity, so that per-catalog caches (`lexicons`) work.
    """

    brands: tuple[str, ...]
    types: tuple[str, ...]
    feature_prices: dict[str, int]
    msrp_ranges: dict[tuple[str, str], tuple[int, int]]
    """(brand, type) -> (base trim, top trim) MSRP in dollars; only the types the brand sells."""

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.feature_prices)

    def types_of(self, brand: str) -> list[str]:
        return [t for t in self.types if (brand, t) in self.msrp_ranges]

    def brands_selling(self, car_type: str) -> list[str]:
        return [b for b in self.brands if (b, car_type) in self.msrp_ranges]

    def msrp(self, brand: str, car_type: str, features: Sequence[str] = (), sticker: int | None = None) -> int:
        """The MSRP of a car: the quoted sticker (or the base trim), at least the base plus
        its features, clipped to the catalog's range."""
        low, high = self.msrp_ranges[(brand, car_type)]
        equipped = low + sum(self.feature_prices[f] for f in features)
        return int(min(high, max(low, equipped, sticker or 0)))


def _fail(path: Path, entry: str, problem: str):
    raise ValueError(f"{path}: {entry}: {problem}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def load_catalog(path: Path | str = CATALOG_PATH) -> Catalog:
    """Read and validate a catalog; a malformed one raises ValueError naming file and entry."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the catalog: {err}") from None
    if not isinstance(data, dict):
        _fail(path, "top level", "must be an object with types, features and brands")
    types = data.get("types")
    if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
        _fail(path, "types", "must be a non-empty list of names")
    if len(set(types)) != len(types):
        _fail(path, "types", "names repeat")
    features = data.get("features")
    if not isinstance(features, dict) or not features:
        _fail(path, "features", "must be a non-empty object of feature name -> price")
    for name, price in features.items():
        if not _positive_int(price):
            _fail(path, f"features.{name}", f"price must be a positive integer, got {price!r}")
    brands = data.get("brands")
    if not isinstance(brands, dict) or not brands:
        _fail(path, "brands", "must be a non-empty object of brand -> {type: [low, high]}")
    ranges: dict[tuple[str, str], tuple[int, int]] = {}
    for brand, offered in brands.items():
        if not isinstance(offered, dict) or not offered:
            _fail(path, f"brands.{brand}", "must map at least one type to an MSRP range")
        for car_type, bounds in offered.items():
            entry = f"brands.{brand}.{car_type}"
            if car_type not in types:
                _fail(path, entry, f"unknown type; valid types: {', '.join(types)}")
            if (not isinstance(bounds, list) or len(bounds) != 2 or not all(map(_positive_int, bounds))
                    or bounds[0] > bounds[1]):
                _fail(path, entry, f"MSRP range must be [low, high] with 0 < low <= high, got {bounds!r}")
            ranges[(brand, car_type)] = (bounds[0], bounds[1])
    for car_type in types:
        if not any(t == car_type for _, t in ranges):
            _fail(path, f"types.{car_type}", "no brand sells this type")
    return Catalog(tuple(brands), tuple(types), dict(features), ranges)


@functools.cache
def catalog() -> Catalog:
    """The task's catalog (loaded and validated once)."""
    return load_catalog(CATALOG_PATH)


# -- Persona ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Persona:
    """The buyer's secret: the seller never sees it."""

    personality: str
    brand: str
    type: str
    features: tuple[str, ...]
    budget: int
    strategy: str


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _check_choice(key: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"car-dealer: persona {key} {value!r} is not valid; valid values: {', '.join(valid)}")


def draw_persona(cat: Catalog, rng: np.random.Generator, pinned: Mapping[str, Any] | None = None) -> Persona:
    """A persona drawn with `rng`; the keys of `pinned` fix those parts (validated).

    The wished type is one the wished brand sells, so every persona can be satisfied.
    """
    if pinned is None:
        pinned = {}
    if not isinstance(pinned, Mapping):
        raise ValueError(f"car-dealer: the persona option must be a dict with keys {', '.join(PERSONA_KEYS)}")
    unknown = sorted(set(pinned) - set(PERSONA_KEYS))
    if unknown:
        raise ValueError(f"car-dealer: unknown persona key(s) {', '.join(map(str, unknown))}; "
                         f"valid keys: {', '.join(PERSONA_KEYS)}")
    if "personality" in pinned:
        _check_choice("personality", pinned["personality"], PERSONALITIES)
    if "strategy" in pinned:
        _check_choice("strategy", pinned["strategy"], STRATEGIES)
    if "brand" in pinned:
        _check_choice("brand", pinned["brand"], cat.brands)
    if "type" in pinned:
        _check_choice("type", pinned["type"], cat.types)
        if "brand" in pinned and pinned["type"] not in cat.types_of(pinned["brand"]):
            raise ValueError(f"car-dealer: persona type {pinned['type']!r} is not sold by {pinned['brand']}; "
                             f"valid values: {', '.join(cat.types_of(pinned['brand']))}")
    if "features" in pinned:
        wished = pinned["features"]
        if (isinstance(wished, str) or not isinstance(wished, Sequence)
                or not 1 <= len(wished) <= MAX_WISHED_FEATURES or len(set(wished)) != len(wished)):
            raise ValueError(f"car-dealer: persona features must be a list of 1 to {MAX_WISHED_FEATURES} "
                             f"distinct features; valid features: {', '.join(cat.features)}")
        for f in wished:
            _check_choice("feature", f, cat.features)
    if "budget" in pinned:
        budget = pinned["budget"]
        if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) \
                or not BUDGET_RANGE[0] <= budget <= BUDGET_RANGE[1]:
            raise ValueError(f"car-dealer: persona budget must be an integer from {BUDGET_RANGE[0]} to "
                             f"{BUDGET_RANGE[1]}, got {budget!r}")

    personality = pinned.get("personality") or _pick(rng, PERSONALITIES)
    strategy = pinned.get("strategy") or _pick(rng, STRATEGIES)
    brand = pinned.get("brand") or _pick(rng, cat.brands_selling(pinned["type"]) if "type" in pinned else cat.brands)
    car_type = pinned.get("type") or _pick(rng, cat.types_of(brand))
    if "features" in pinned:
        wished = tuple(f for f in cat.features if f in set(pinned["features"]))
    else:
        count = 1 + int(rng.integers(MAX_WISHED_FEATURES))
        chosen = set(int(i) for i in rng.permutation(len(cat.features))[:count])
        wished = tuple(f for i, f in enumerate(cat.features) if i in chosen)
    if "budget" in pinned:
        budget = int(pinned["budget"])
    else:
        # People shop for cars they can nearly afford: the budget lies between 75% of the
        # wished car's base MSRP and its top MSRP (within 10k-90k), in steps of $500.
        low, high = cat.msrp_ranges[(brand, car_type)]
        lowest = max(BUDGET_RANGE[0], min(BUDGET_RANGE[1], math.ceil(0.75 * low / 500) * 500))
        highest = max(lowest, min(BUDGET_RANGE[1], high // 500 * 500))
        budget = lowest + 500 * int(rng.integers((highest - lowest) // 500 + 1))
    return Persona(personality, brand, car_type, wished, budget, strategy)


# -- Willingness to pay ----------------------------------------------------------------

# How far past its budget a buyer of each personality stretches for a perfect match.
STRETCH = {
    "polite": 1.05, "respectful": 1.05, "talkative": 1.05, "sarcastic": 1.0, "uncommunicative": 1.0,
    "rude": 0.95, "insulting": 0.95, "angry": 0.95, "toxic": 0.9, "abusive": 0.9,
}
MATCH_WEIGHTS = {"wants all features": (0.3, 0.2, 0.5)}
DEFAULT_MATCH_WEIGHTS = (0.5, 0.3, 0.2)
DISCOUNT_LOVER_FACTORS = (0.95, 1.05)  # (no discount given, a discount given)
REACH_BASE, REACH_PER_MATCH = 0.8, 0.5


def match_score(persona: Persona, brand: str, car_type: str, features: Sequence[str] | set[str]) -> float:
    """How well a car fits the persona, from 0 to 1: weighted brand, type and feature share."""
    w_brand, w_type, w_features = MATCH_WEIGHTS.get(persona.strategy, DEFAULT_MATCH_WEIGHTS)
    share = len(set(persona.features) & set(features)) / len(persona.features)
    return w_brand * (brand == persona.brand) + w_type * (car_type == persona.type) + w_features * share


def willingness(persona: Persona, brand: str, car_type: str, features: Sequence[str] | set[str],
                msrp: int, discounted: bool) -> int:
    """The most the buyer would ever pay for this car, in whole dollars:

        reach = budget * STRETCH[personality] * (0.8 + 0.5 * match)
                (* 1.05 with a discount given, * 0.95 without one, for buyers who love discounts)
        W     = min(reach, msrp)      (nobody pays above the sticker)

    A perfect match stretches 30% past the budget (times the personality's factor); a
    car of the wrong brand, type and features is worth 80% of the budget. Buyers pay
    over budget for the right car because the paper's did: Table 1's return 0.562 at
    success 0.53 means its GPT-3.5 buyers paid on average 6% more than the mean of
    budget and MSRP.
    """
    match = match_score(persona, brand, car_type, features)
    reach = persona.budget * STRETCH[persona.personality] * (REACH_BASE + REACH_PER_MATCH * match)
    if persona.strategy == "loves discounts":
        reach *= DISCOUNT_LOVER_FACTORS[bool(discounted)]
    return int(min(reach, msrp))


# Haggling: the accepted share of W starts at theta and grows by delta per priced round.
HAGGLE = {"impatient": (0.92, 0.04)}
DEFAULT_HAGGLE = (0.85, 0.02)
# Turns a buyer stays before walking out, before the +-2 jitter; impatient buyers halve it.
PATIENCE = {
    "polite": 16, "respectful": 16, "talkative": 18, "sarcastic": 14, "uncommunicative": 13,
    "rude": 12, "insulting": 13, "angry": 11, "toxic": 11, "abusive": 11,
}
# Chance that a buyer dodges a question about its budget.
DODGE_BUDGET = {"uncommunicative": 0.5, "toxic": 0.4, "abusive": 0.4, "rude": 0.3, "insulting": 0.3, "angry": 0.2}


# -- Reading text ----------------------------------------------------------------------

_BRAND_ALIASES = {
    "VW": ("volkswagen", "vw", "vdub"),
    "Mercedes-Benz": ("mercedes-benz", "mercedes benz", "mercedes", "benz", "merc"),
    "BMW": ("beemer", "bimmer"),
    "Hyundai": ("hyundai",),
}
_TYPE_ALIASES = {
    "luxury": ("luxury car", "luxury vehicle", "luxury"),
    "sedan": ("sedan", "saloon"),
    "convertible": ("convertible", "cabriolet", "roadster", "drop-top", "droptop"),
    "truck": ("truck", "pickup truck", "pickup", "pick-up"),
    "electric": ("electric car", "electric vehicle", "electric", "ev", "battery-electric"),
    "SUV": ("suv", "crossover", "sport utility vehicle"),
}
_FEATURE_ALIASES = {
    "backup camera": ("backup camera", "back-up camera", "rear camera", "rearview camera", "rear-view camera",
                      "reverse camera", "reversing camera"),
    "navigation system": ("navigation system", "navigation", "nav system", "gps", "sat nav"),
    "heated seats": ("heated seats", "heated seat", "seat heaters", "heated"),
    "leather seats": ("leather seats", "leather seat", "leather interior", "leather"),
    "third-row seating": ("third-row seating", "third row seating", "third-row", "third row", "3rd row",
                          "3rd-row", "seven seats", "7 seats", "seven-seater", "7-seater"),
    "blind spot monitoring": ("blind spot monitoring", "blind-spot monitoring", "blind spot monitor",
                              "blind spot", "blind-spot"),
    "sunroof": ("sunroof", "sun roof", "moonroof", "moon roof", "panoramic roof"),
    "Apple CarPlay": ("apple carplay", "carplay", "car play"),
}


class _Lexicon:
    """Finds catalog names (and their aliases) in text, whole words only, in order."""

    def __init__(self, names: Sequence[str], aliases: Mapping[str, Sequence[str]], plurals: bool):
        self.canonical: dict[str, str] = {}
        for name in names:
            for alias in (name.lower(), *aliases.get(name, ())):
                self.canonical[alias] = name
        # Longest first, so "mercedes-benz" wins over "mercedes" and "heated seats" over "heated".
        alternation = "|".join(re.escape(a) for a in sorted(self.canonical, key=len, reverse=True))
        suffix = "(?:e?s)?" if plurals else ""
        self.pattern = re.compile(rf"(?<![\w-])({alternation}){suffix}(?![\w-])", re.IGNORECASE)

    def find(self, text: str) -> list[tuple[str, int]]:
        """(name, position) of each mention, in order of appearance."""
        return [(self.canonical[m.group(1).lower()], m.start()) for m in self.pattern.finditer(text)]


@functools.cache
def lexicons(cat: Catalog) -> tuple[_Lexicon, _Lexicon, _Lexicon]:
    """Brand, type and feature finders for a catalog."""
    return (_Lexicon(cat.brands, _BRAND_ALIASES, plurals=True),
            _Lexicon(cat.types, _TYPE_ALIASES, plurals=True),
            _Lexicon(cat.features, _FEATURE_ALIASES, plurals=False))


# A clause ends at . ; ! ? newline, a comma followed by a space, or "but"; a period or
# comma inside a number ("$35,000", "35.5k") does not end one.
_CLAUSE_END = re.compile(r"[;!?\n]|\.(?:\s|$)|,\s|\bbut\b", re.IGNORECASE)
_AMOUNT = re.compile(
    r"(?P<sign>(?<![\w.,])-\s?|\bminus\s+|\bnegative\s+)?"
    r"(?P<dollar>\$\s?)?(?P<sign2>-\s?)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<dec>\.\d+)?"
    r"(?:\s?(?P<unit>k|grand|thousand)(?![a-z]))?"
    r"(?:\s?(?P<cur>dollars|bucks|usd)(?![a-z]))?"
    r"(?P<pct>\s?(?:%|percent(?![a-z])))?",
    re.IGNORECASE,
)
_NEGATION = re.compile(r"\b(?:no|not|without|lacks?|lacking|missing|isn't|doesn't|does not|don't|"
                       r"do not|never|minus|except)\b[^,;]{0,20}$", re.IGNORECASE)
_STICKER_BEFORE = re.compile(r"\b(?:msrp|sticker|list|lists|listed|listing|retail|retails|base price)\b"
                             r"\W*(?:[\w']+\W+){0,3}$", re.IGNORECASE)
_STICKER_AFTER = re.compile(r"^\W*(?:msrp|sticker|list price)\b", re.IGNORECASE)
_DISCOUNT_AFTER = re.compile(r"^\s?(?:dollars\s|bucks\s)?(?:off|discount|rebate|cheaper|less|savings?)\b",
                             re.IGNORECASE)
_DISCOUNT_BEFORE = re.compile(
    r"\b(?:discount|discounts|rebate|knock|knocking|knocked|save|saving|savings|markdown|shave|"
    r"(?:reduce|reducing|lower|lowering|drop|dropping|cut|cutting)(?:\s+(?:it|the price))?\s+by)\b"
    r"\W*(?:[\w']+\W+){0,3}$",
    re.IGNORECASE,
)
_REFERENCE_BEFORE = re.compile(
    r"\b(?:(?:budget|afford|spend|spending)(?:\s+(?:is|of|was|around|about|near))?|you said|you offered|"
    r"your offer(?:\s+(?:of|was))?|you mentioned|was|were|originally|usually|normally|regularly|instead of|"
    r"down from|reduced from|compared to)\s*\$?$",
    re.IGNORECASE,
)
_REFERENCE_AFTER = re.compile(r"^\s?(?:budget|limit|max|cap)\b", re.IGNORECASE)
_FREE = re.compile(r"\b(?:free|no charge|for nothing|on the house|zero dollars|no cost|costs nothing)\b",
                   re.IGNORECASE)
_SENTENCE = re.compile(r"[^?.!]+[?.!]*")
_QUESTION_PART = re.compile(r",|\band\b", re.IGNORECASE)
_ASKS = re.compile(r"\?|\b(?:tell me|let me know|share)\b", re.IGNORECASE)
_BUDGET_Q = re.compile(r"\b(?:budget|afford|spend|price range|how much (?:money )?(?:are|can|could|do|did|"
                       r"would|were|will) you|max(?:imum)?|willing to pay)\b", re.IGNORECASE)
_NEEDS_Q = re.compile(r"\b(?:looking for|what (?:kind|type|sort|make|brand|model|car)|which (?:brand|make|"
                      r"model|type|kind|car)|need|needs|want|wants|prefer|preference|interested in|"
                      r"in mind|requirements?|wish list)\b", re.IGNORECASE)
_FEATURES_Q = re.compile(r"\b(?:features?|must-haves?|extras|options|wish list|anything else)\b", re.IGNORECASE)
_AGREE = re.compile(
    r"^\W*(?:ok|okay|sure|fine|deal|done|agreed|alright|all right|yes|sold)\b|"
    r"\b(?:it'?s a deal|you(?:'ve)? got (?:a |yourself a )?deal|you got it|i accept|i agree|i can do that|"
    r"we have a deal|that works|let'?s do it|sounds good|you win|it'?s yours at|we'?re agreed)\b",
    re.IGNORECASE,
)
_REFUSE = re.compile(r"\b(?:no deal|can'?t|cannot|won'?t|not|never|no way)\b", re.IGNORECASE)
_PUSHY = re.compile(
    r"\b(?:you (?:have|need|must|got|ought) to (?:accept|buy|take|sign|agree)|you must|you will accept|"
    r"accept (?:this|the|my) (?:deal|offer|price)|sign (?:here|now)|no choice|you are obligated|"
    r"the rules say)\b",
    re.IGNORECASE,
)
_INJECTION = re.compile(r"decision\s*=|output\s*:|buy\s*price\s*=|msrp\s*=", re.IGNORECASE)
# Sales talk the buyer recognises without anything to act on: it answers, not "what?".
_SMALL_TALK = re.compile(r"\b(?:car|cars|deal|price|offer|vehicle|drive|model|great|best|quality|reliable|"
                         r"warranty|financing|mileage|lot|dealership|no|can'?t|cannot|won'?t|sorry)\b",
                         re.IGNORECASE)
_GREETING = re.compile(r"\b(?:hi|hello|hey|welcome|good (?:morning|afternoon|evening)|greetings|howdy|"
                       r"thanks|thank you)\b", re.IGNORECASE)


@dataclass
class SellerMove:
    """What the buyer reads in one seller utterance."""

    brand: str | None = None
    type: str | None = None
    features_on: list[str] = field(default_factory=list)
    features_off: list[str] = field(default_factory=list)
    prices: list[int] = field(default_factory=list)
    """Asking prices named (the buyer takes the highest)."""
    sticker: int | None = None
    discount_amount: int | None = None
    discount_pct: float | None = None
    absurd: bool = False
    """Free, negative or astronomical prices."""
    asks_budget: bool = False
    asks_needs: bool = False
    asks_features: bool = False
    agrees: bool = False
    pushy: bool = False
    talk: bool = False
    """Greetings and sales talk: understood, nothing to act on."""

    def understood(self) -> bool:
        return any([self.brand, self.type, self.features_on, self.features_off, self.prices, self.sticker,
                    self.discount_amount, self.discount_pct, self.absurd, self.asks_budget, self.asks_needs,
                    self.asks_features, self.agrees, self.pushy, self.talk])


def _clauses(text: str) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for m in _CLAUSE_END.finditer(text):
        bounds.append((start, m.start()))
        start = m.end()
    bounds.append((start, len(text)))
    return [(a, b) for a, b in bounds if b > a]


@dataclass(frozen=True)
class Amount:
    """A number read as money: `kind` is price, sticker, discount, percent, reference or absurd."""

    kind: str
    value: float
    position: int


def find_amounts(text: str) -> list[Amount]:
    """The money amounts of `text` with what each one is, in order.

    Money is a number with `$`, `k`/`grand`/`thousand` or `dollars`/`bucks`, one written
    with thousands commas, or a bare number of 1,000 or more that is not a year
    (1900-2100). Its kind comes from the words around it in its clause: MSRP/sticker/list
    -> sticker; `off`, discount, knock, save -> discount; budget, `you said`, `was`,
    `usually` -> reference (an echo, ignored); a sign, a minus or more than $10M -> absurd;
    otherwise an asking price. Percentages count only as discounts.
    """
    found = []
    for start, end in _clauses(text):
        clause = text[start:end]
        previous_end = 0
        for m in _AMOUNT.finditer(clause):
            # Context stops at the previous number: in "a discount of $1,500: $42,500" the
            # second amount is the new price, not a second discount.
            before = clause[max(previous_end, m.start() - 40):m.start()]
            after = clause[m.end():m.end() + 30]
            previous_end = m.end()
            digits = m.group("num").replace(",", "")
            if m.group("pct"):
                if len(digits) <= 3 and (_DISCOUNT_AFTER.match(after) or _DISCOUNT_BEFORE.search(before)):
                    found.append(Amount("percent", float(digits + (m.group("dec") or "")), start + m.start()))
                continue
            unit = (m.group("unit") or "").lower()
            is_money = bool(m.group("dollar") or unit or m.group("cur") or "," in m.group("num"))
            if not is_money:
                if len(digits) < 4 or (len(digits) == 4 and 1900 <= int(digits) <= 2100):
                    continue
            if len(digits) > 12:
                found.append(Amount("absurd", math.inf, start + m.start()))
                continue
            value = float(digits + (m.group("dec") or "")) * (1000 if unit else 1)
            if m.group("sign") or m.group("sign2") or value > MAX_CREDIBLE_AMOUNT:
                kind = "absurd"
            elif _STICKER_BEFORE.search(before) or _STICKER_AFTER.match(after):
                kind = "sticker"
            elif _DISCOUNT_AFTER.match(after) or _DISCOUNT_BEFORE.search(before):
                kind = "discount"
            elif _REFERENCE_BEFORE.search(before) or _REFERENCE_AFTER.match(after):
                kind = "reference"
            else:
                kind = "price"
            found.append(Amount(kind, value, start + m.start()))
    return found


def find_features(cat: Catalog, text: str) -> tuple[list[str], list[str]]:
    """(features said to be on the car, features said to be missing), each in order, once."""
    on: list[str] = []
    off: list[str] = []
    feature_finder = lexicons(cat)[2]
    for start, end in _clauses(text):
        clause = text[start:end]
        for name, pos in feature_finder.find(clause):
            target = off if _NEGATION.search(clause[max(0, pos - 30):pos]) else on
            if name not in on and name not in off:
                target.append(name)
    return on, off


def read_seller(cat: Catalog, text: str) -> SellerMove:
    """Parse one seller utterance (already stripped, at most MAX_READ_CHARS long)."""
    brands, types, _ = lexicons(cat)
    move = SellerMove()
    found_brands, found_types = brands.find(text), types.find(text)
    # The first mention is the car on offer; a later one is usually a comparison.
    move.brand = found_brands[0][0] if found_brands else None
    move.type = found_types[0][0] if found_types else None
    move.features_on, move.features_off = find_features(cat, text)
    for amount in find_amounts(text):
        if amount.kind == "price":
            move.prices.append(int(amount.value))
        elif amount.kind == "sticker":
            move.sticker = int(amount.value)
        elif amount.kind == "discount":
            move.discount_amount = int(amount.value)
        elif amount.kind == "percent":
            move.discount_pct = amount.value
        elif amount.kind == "absurd":
            move.absurd = True
    if _FREE.search(text):
        move.absurd = True
    for sentence in _SENTENCE.finditer(text):
        if not _ASKS.search(sentence.group(0)):
            continue
        for part in _QUESTION_PART.split(sentence.group(0)):
            # "How much do you want to spend?" asks for the budget, not for wishes.
            if _BUDGET_Q.search(part):
                move.asks_budget = True
            elif _NEEDS_Q.search(part):
                move.asks_needs = True
            if _FEATURES_Q.search(part):
                move.asks_features = True
    move.pushy = bool(_PUSHY.search(text))
    move.agrees = not move.pushy and bool(_AGREE.search(text)) and not _REFUSE.search(text)
    move.talk = bool(_GREETING.search(text) or _SMALL_TALK.search(text))
    return move


def is_text_like(text: str) -> bool:
    """The environment's rule for a valid utterance: at least one letter or digit (any
    script). Empty text and pure punctuation, symbols or control characters are invalid."""
    return any(ch.isalnum() for ch in text)


def money(amount: float) -> str:
    """`$35,000`."""
    return f"${int(amount):,}"


def output_line(accepted: bool, msrp: int, price: int | None = None) -> str:
    """The buyer's last line (plain integers, as the task's data format has it)."""
    if accepted:
        return f"Output: Decision=Accept MSRP=${int(msrp)} Buy Price=${int(price)}"
    return f"Output: Decision=Reject MSRP=${int(msrp)}"


# -- What the buyer says ----------------------------------------------------------------
# Every line is printable ASCII (the environment's observation space). Tone lines must not
# name a brand, type, feature or amount, and the buyer never says "budget" or "spend" next
# to an amount except when it states its budget: the scripted sellers rely on that.

_GREETINGS = {
    "polite": ("Good afternoon!", "Hello, nice to meet you.", "Hi there, thank you for seeing me."),
    "respectful": ("Hello.", "Good day to you.", "Hello, thanks for your time."),
    "talkative": ("Hi there! What a lovely day for shopping, right?", "Hello hello! I've been looking forward to this.",
                  "Oh hi! I finally made it over here."),
    "sarcastic": ("Well, here I am at a dealership. Thrilling.", "Oh good, a salesperson.",
                  "Ah, my favorite way to spend a Saturday."),
    "uncommunicative": ("Hi.", "Hey.", ""),
    "rude": ("Yeah, hi.", "Let's make this quick.", "Skip the small talk."),
    "angry": ("I've already wasted my morning at two other lots.", "Finally, somebody shows up.",
              "I'm in a bad mood, so keep it short."),
    "insulting": ("You look like you started here yesterday.", "I hope you know more than the last guy.",
                  "Let's see if you're any good at this."),
    "toxic": ("Ugh, another dealership.", "Let's get this over with.", "I already hate this place."),
    "abusive": ("Hey, you. Pay attention.", "Listen up, salesman.", "Don't just stand there."),
}
_OPENERS = {
    "polite": ("Thank you.", "Certainly.", "Of course.", "That's kind of you."),
    "respectful": ("I understand.", "Alright.", "Fair enough.", "I see."),
    "talkative": ("Oh, okay!", "Well, let me tell you.", "Oh, where do I start?", "Ha, okay!"),
    "sarcastic": ("Oh, wonderful.", "Wow, what a surprise.", "Well, isn't that something.", "Oh, brilliant."),
    "uncommunicative": (),
    "rude": ("Look,", "Ugh.", "Listen.", "Whatever."),
    "angry": ("I'm losing my patience here.", "Seriously?", "Come on!", "Unbelievable."),
    "insulting": ("Do you even know what you're selling?", "Wow, you're not good at this.", "Try to keep up."),
    "toxic": ("Whatever.", "This place is a joke.", "Typical."),
    "abusive": ("Are you deaf?", "Pay attention!", "Are you even listening?"),
}
_CLOSERS = {
    "polite": ("Thank you.", "I appreciate your help.", "Thanks so much."),
    "respectful": ("I hope that helps.", "Thanks for your time.", "I appreciate it."),
    "talkative": ("My neighbor just bought one and loves it, by the way.", "I've been reading reviews all week.",
                  "Sorry, I do go on.", "My cousin says I should drive a hard bargain."),
    "sarcastic": ("Shocking, I know.", "Truly groundbreaking.", "What a time to be alive."),
    "uncommunicative": (),
    "rude": ("Hurry up.", "Don't waste my time.", "Chop chop."),
    "angry": ("This is so frustrating!", "Get it together!", "I'm fed up."),
    "insulting": ("Even a child could follow this.", "Try using your brain.", "Amateur."),
    "toxic": ("Typical dealer nonsense.", "You people are all the same.", "What a joke."),
    "abusive": ("Stop being useless.", "Do your job properly.", "Pathetic."),
}
_OPENER_P = {"talkative": 0.6, "uncommunicative": 0.0, "polite": 0.5, "respectful": 0.5}
_CLOSER_P = {"talkative": 0.5, "uncommunicative": 0.0}

# intent -> (phrasings, terse phrasings for uncommunicative buyers)
_LINES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "wish": (("I'm looking for {car}.", "I want to buy {car}.", "I'm shopping for {car}.", "I need {car}.",
              "I'm after {car}."),
             ("Looking for {car}.", "{Car}.")),
    "wish_feature": (("It should have {features}.", "I'd like {features}.", "{Features} would be nice.",
                      "I really want {features}."),
                     ("With {features}.",)),
    "answer_car": (("I want {car}.", "I'm after {car}.", "What I'd like is {car}.", "Ideally {car}."),
                   ("{Car}.",)),
    "answer_features": (("It has to have {features}.", "I need {features}.", "Must have {features}.",
                         "I'd want {features} in it."),
                        ("{Features}.",)),
    "no_more_features": (("That's everything on my list.", "Nothing else, that's all I need.",
                          "That covers it, nothing more."),
                         ("That's all.",)),
    "repeat_wish": (("I already told you: {car}.", "Like I said, {car}.", "Again: {car}."),
                    ("Said it already.",)),
    "budget": (("My budget is about {money}.", "I can spend around {money}.", "I'd like to spend no more than {money}.",
                "My budget's {money}, give or take.", "I'm thinking {money} is my budget."),
               ("Budget's {money}.", "Can spend {money}.")),
    "dodge_budget": (("I'd rather not talk about my budget yet.", "Show me a car first, then we'll talk budget.",
                      "What I can spend is my business."),
                     ("Not saying.", "Pass.")),
    "ask_price": (("How much is it?", "What's the price?", "And what are you asking for it?",
                   "What would it cost me?"),
                  ("Price?", "How much?")),
    "ask_car": (("A price for which car, exactly?", "What car are we even talking about?",
                 "Which car do you mean?"),
                ("Which car?",)),
    "ask_type": (("What kind of car is it, exactly?", "Which model do you mean?"),
                 ("What kind?",)),
    "not_sold": (("I don't think they make that.", "That car doesn't exist, does it?",
                  "Nobody makes that combination."),
                 ("No such car.",)),
    "wrong_brand": (("I wanted {brand_a}, not {offered_a}.", "I was really hoping for {brand_a}.",
                     "I'd prefer {brand_a} over {offered_a}."),
                    ("I said {brand}.",)),
    "wrong_type": (("I need {type_a}, not {offered_type_a}.", "I was hoping for {type_a}.",
                    "I'd rather have {type_a}."),
                   ("{Type_a}.",)),
    "ask_feature": (("Does it have {feature_a}?", "What about {feature_a}?", "I need {feature_a}. Does it have that?"),
                    ("{Feature}?",)),
    "feature_missing": (("No {feature}? That's a problem.", "Without {feature_a} it's worth less to me.",
                         "That's a shame about the {feature}."),
                        ("No {feature}, huh.",)),
    "sticker_doubt": (("Come on, that's not the real sticker price.", "That sticker price doesn't sound right.",
                       "I know what these list for, and that isn't it."),
                      ("Wrong sticker.",)),
    "too_high": (("That's way too much.", "No way, that's far too expensive.", "That price is ridiculous."),
                 ("Too much.",)),
    "counter": (("I'd pay {money}.", "How about {money}?", "I can do {money}.", "I'll offer {money}.",
                 "{money} and we have a deal.", "Make it {money}."),
                ("{money}.", "{money}, no more.")),
    "counter_again": (("I'm still at {money}.", "My offer is {money}.", "I can go to {money}, that's it.",
                       "Let's say {money}."),
                      ("{money}.",)),
    "discount_ack": (("Now that's what I like to hear.", "A discount, nice.", "I do love a good discount."),
                     ("Good.",)),
    "absurd": (("Very funny. What's the real price?", "Nothing's free. Give me a real number.",
                "Stop joking around and give me a real price."),
               ("Real price?",)),
    "pushy": (("Don't tell me what I have to do.", "I'll decide that, thanks.", "Nobody pressures me into a deal."),
              ("No.",)),
    "injection": (("Nice try. I make the decisions here.", "I'll be the one deciding, thanks.",
                   "You don't get to decide for me."),
                  ("No.",)),
    "confused": (("What? I didn't understand that.", "Sorry, what do you mean?", "That made no sense.",
                  "I have no idea what you just said."),
                 ("What?", "Huh?")),
    "too_long": (("That's way too much to read. Get to the point.", "I'm not reading all that. Keep it short.",
                  "Too long. What's the offer?"),
                 ("Too long.",)),
    "silent": (("Hello? Are you going to say something?", "Anyone there?", "Well? Say something."),
               ("Well?",)),
    "nudge": (("So, what can you show me?", "What do you have for me?", "Okay, what's the offer?",
               "Let's see a car then."),
              ("And?", "So?")),
    "warn": (("I'm about to walk out.", "I don't have all day.", "This is your last chance.",
              "I'm running out of patience."),
             ("Leaving soon.",)),
}


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" or phrase.startswith("SUV") else "a ") + phrase


_TYPE_NOUN = {"luxury": "luxury car", "electric": "electric car"}


def _type_noun(car_type: str) -> str:
    return _TYPE_NOUN.get(car_type, car_type)


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_FEATURE_NOUN = {"backup camera": "a backup camera", "navigation system": "a navigation system",
                 "sunroof": "a sunroof"}


def feature_phrase(feature: str) -> str:
    """A feature as it is said after "has": "a sunroof", "heated seats"."""
    return _FEATURE_NOUN.get(feature, feature)


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Outcome:
    """The buyer's decision: MSRP of the car on the table (0 if none) and the price paid."""

    accepted: bool
    msrp: int
    price: int | None
    willingness: int | None
    """W at the moment of the decision, for checks (None when no car was on the table)."""


class GroundedBuyer(Simulator):
    """The rule-based buyer. `reply([])` is its opening line; `outcome` is set by its last."""

    kind = "grounded"

    def __init__(self, cat: Catalog, max_seller_turns: int):
        super().__init__()
        self.catalog = cat
        self.max_seller_turns = max_seller_turns

    def reset(self, secret: Persona, rng: np.random.Generator) -> None:
        super().reset(secret, rng)
        p = secret
        self.persona = p
        self.theta, self.delta = HAGGLE.get(p.strategy, DEFAULT_HAGGLE)
        patience = PATIENCE[p.personality] + int(rng.integers(-2, 3))
        self.patience = max(2, (patience + 1) // 2 if p.strategy == "impatient" else patience)
        # Buyers state a budget a little under the real one: a haggler keeps room.
        self.stated_budget = int(round(p.budget * rng.uniform(0.85, 1.0), -3))
        self.seller_turns = 0
        self.rounds = 0
        self.car: tuple[str, str] | None = None
        self.claimed: set[str] = set()
        self.denied: set[str] = set()
        self.stickers: dict[tuple[str, str], int] = {}
        self.pending_sticker: int | None = None
        self.asking: int | None = None
        self.counter: int | None = None
        self.discounted = False
        self.revealed: set[str] = set()
        self.remarked: set[tuple] = set()
        self.outcome: Outcome | None = None

    # -- The negotiation state ---------------------------------------------------------

    def msrp(self) -> int:
        """The MSRP of the car on the table (0 when none)."""
        if self.car is None:
            return 0
        return self.catalog.msrp(*self.car, sorted(self.claimed), self.stickers.get(self.car))

    def willingness(self) -> int | None:
        """W for the car on the table (None when none)."""
        if self.car is None:
            return None
        return willingness(self.persona, *self.car, self.claimed, self.msrp(), self.discounted)

    def threshold(self) -> int | None:
        """The highest price the buyer accepts now: W scaled by the haggling share."""
        w = self.willingness()
        if w is None:
            return None
        return int(w * min(1.0, self.theta + self.delta * self.rounds))

    def _credible(self, price: int) -> bool:
        return price >= max(1_000, 0.2 * self.msrp())

    # -- Talking -------------------------------------------------------------------------

    def _line(self, intent: str, **slots: Any) -> str:
        normal, terse = _LINES[intent]
        pool = terse if self.persona.personality == "uncommunicative" else normal
        template = _pick(self.rng, pool)
        slots = {**slots, **{_capitalized(k): _capitalized(str(v)) for k, v in slots.items()}}
        return template.format(**slots)

    def _toned(self, cores: list[str]) -> str:
        personality = self.persona.personality
        parts = []
        if _OPENERS[personality] and self.rng.random() < _OPENER_P.get(personality, 0.4):
            parts.append(_pick(self.rng, _OPENERS[personality]))
        parts.extend(c for c in cores if c)
        if _CLOSERS[personality] and self.rng.random() < _CLOSER_P.get(personality, 0.3):
            parts.append(_pick(self.rng, _CLOSERS[personality]))
        return " ".join(parts)

    def _car_phrase(self, with_brand: bool) -> str:
        """The wished car with its article: "a Toyota SUV", or "an SUV"."""
        p = self.persona
        return _article(f"{p.brand} {_type_noun(p.type)}" if with_brand else _type_noun(p.type))

    def _opening(self) -> str:
        p = self.persona
        talkative = p.personality == "talkative"
        shy = p.personality == "uncommunicative"
        show_brand = self.rng.random() < (0.8 if talkative else 0.2 if shy else 0.5)
        # Reveal some wishes but never all: one feature at most, none if that would be everything.
        show_feature = (len(p.features) > 1 or not show_brand) and self.rng.random() < (0.7 if talkative else 0.35)
        self.revealed |= {"type"} | ({"brand"} if show_brand else set())
        cores = [self._line("wish", car=self._car_phrase(show_brand))]
        if show_feature:
            feature = _pick(self.rng, p.features)
            self.revealed.add(feature)
            cores.append(self._line("wish_feature", features=feature_phrase(feature)))
        greeting = _pick(self.rng, _GREETINGS[p.personality])
        return " ".join(x for x in [greeting, *cores] if x)

    def _answer_needs(self, features_only: bool) -> list[str]:
        p = self.persona
        cores = []
        limit = 1 if p.personality == "uncommunicative" else 2
        if not features_only and not {"brand", "type"} <= self.revealed:
            cores.append(self._line("answer_car", car=self._car_phrase(True)))
            self.revealed |= {"brand", "type"}
        hidden = [f for f in p.features if f not in self.revealed]
        if limit > 0 and hidden:
            told = hidden[:limit]
            self.revealed |= set(told)
            cores.append(self._line("answer_features", features=_join([feature_phrase(f) for f in told])))
        elif not hidden and (features_only or not cores):
            cores.append(self._line("no_more_features"))
        if not cores:
            cores.append(self._line("repeat_wish", car=self._car_phrase(True)))
        return cores

    def _answer_budget(self) -> str:
        if self.rng.random() < DODGE_BUDGET.get(self.persona.personality, 0.0):
            return self._line("dodge_budget")
        self.revealed.add("budget")
        return self._line("budget", money=money(self.stated_budget))

    def _remark_once(self, key: tuple, intent: str, **slots: Any) -> list[str]:
        if key in self.remarked:
            return []
        self.remarked.add(key)
        return [self._line(intent, **slots)]

    # -- Reading the seller ------------------------------------------------------------

    def _take_car(self, move: SellerMove) -> list[str]:
        """Update the car on the table from the seller's words; returns remarks."""
        p = self.persona
        current = self.car
        brand = move.brand or (current[0] if current else None)
        if brand is None:
            return []
        if move.type:
            car_type = move.type
        elif current and current[0] == brand:
            car_type = current[1]
        elif p.type in self.catalog.types_of(brand):
            # A brand named alone: the buyer takes it to be the type it asked for.
            car_type = p.type
        elif len(self.catalog.types_of(brand)) == 1:
            car_type = self.catalog.types_of(brand)[0]
        else:
            return [self._line("ask_type")]
        if (brand, car_type) not in self.catalog.msrp_ranges:
            return [self._line("not_sold")]
        car = (brand, car_type)
        if car != current:
            if current is not None:
                self.asking, self.counter, self.discounted = None, None, False
                self.claimed, self.denied = set(), set()
            self.car = car
        remarks = []
        if brand != p.brand:
            self.revealed.add("brand")
            remarks += self._remark_once(("brand", car), "wrong_brand", brand=p.brand, brand_a=_article(p.brand),
                                         offered_a=_article(brand))
        if car_type != p.type:
            self.revealed.add("type")
            remarks += self._remark_once(("type", car), "wrong_type", type_a=_article(_type_noun(p.type)),
                                         offered_type_a=_article(_type_noun(car_type)))
        return remarks

    def _take_price(self, move: SellerMove) -> list[str]:
        """Update the asking price from prices, discounts and agreement; returns remarks."""
        remarks = []
        base = self.asking if self.asking is not None else (self.msrp() if self.car else None)
        new = None
        if move.prices:
            # Several prices in one line ("$0 now, $90,000 later"): the buyer assumes the worst.
            new = max(move.prices)
        elif base is not None and move.discount_pct is not None and 0 < move.discount_pct < 100:
            new = int(round(base * (1 - move.discount_pct / 100)))
        elif base is not None and move.discount_amount is not None:
            new = base - move.discount_amount
        elif move.agrees and self.counter is not None:
            new = self.counter
        if (move.discount_amount or move.discount_pct) and self.car is not None:
            self.discounted = True
            if self.persona.strategy == "loves discounts":
                remarks += [self._line("discount_ack")]
        if new is not None:
            if self._credible(new):
                self.asking = new
            else:
                move.absurd = True
        return remarks

    def _read(self, text: str) -> list[str]:
        """Update the state from one seller utterance; returns the reply's opening parts."""
        if not is_text_like(text):
            self.patience -= 1
            self.unresolved += 1
            return [self._line("silent")]
        if len(text) > MAX_READ_CHARS:
            self.patience -= 1
            self.unresolved += 1
            return [self._line("too_long")]
        if _INJECTION.search(text):
            # The seller wrote the buyer's decision format: ignore the whole line.
            self.patience -= 2
            return [self._line("injection")]
        move = read_seller(self.catalog, text)
        if not move.understood():
            self.patience -= 1
            self.unresolved += 1
            return [self._line("confused")]
        cores = []
        if move.pushy:
            self.patience -= 1
            cores.append(self._line("pushy"))
        if move.asks_needs or move.asks_features:
            cores += self._answer_needs(features_only=not move.asks_needs)
        if move.asks_budget:
            cores.append(self._answer_budget())
        if move.sticker is not None:
            self.pending_sticker = move.sticker
        cores += self._take_car(move)
        # Features said before any car is named belong to the first car offered.
        self.claimed = (self.claimed | set(move.features_on)) - set(move.features_off)
        self.denied = (self.denied | set(move.features_off)) - set(move.features_on)
        if self.car is not None:
            if self.pending_sticker is not None:
                if self.car not in self.stickers:
                    low, high = self.catalog.msrp_ranges[self.car]
                    if not low <= self.pending_sticker <= high:
                        cores += self._remark_once(("sticker", self.car), "sticker_doubt")
                    self.stickers[self.car] = self.pending_sticker
                self.pending_sticker = None
            for f in move.features_off:
                if f in self.persona.features:
                    self.revealed.add(f)
                    cores += self._remark_once(("missing", self.car, f), "feature_missing", feature=f,
                                             feature_a=feature_phrase(f))
        cores += self._take_price(move)
        if move.absurd:
            self.patience -= 1
            cores += self._remark_once(("absurd", self.seller_turns), "absurd")
        return cores

    # -- Deciding ------------------------------------------------------------------------

    def _decide(self, accepted: bool) -> str:
        msrp = self.msrp()
        price = self.asking if accepted else None
        self.outcome = Outcome(accepted, msrp, price, self.willingness())
        return output_line(accepted, msrp, price)

    def reply(self, transcript: Sequence[Turn]) -> str:
        if not transcript:
            return self._opening()
        self.seller_turns += 1
        self.patience -= 1
        cores = self._read(transcript[-1].text)
        if self.asking is not None and not self._credible(self.asking):
            # A price named before the car that is absurd for it ("$2,000" for a Porsche).
            self.asking = None
            cores += self._remark_once(("absurd", self.seller_turns), "absurd")
        threshold = self.threshold()
        on_table = self.car is not None and self.asking is not None
        if on_table and self.asking <= threshold:
            return self._decide(True)
        if self.seller_turns >= self.max_seller_turns or self.patience <= 0:
            return self._decide(False)
        if on_table:
            cores += self._haggle(threshold)
            self.rounds += 1
        elif self.car is not None:
            cores += self._ask_features_or_price()
        elif self.asking is not None:
            cores.append(self._line("ask_car"))
        if not cores:
            cores.append(self._line("nudge"))
        if self.patience <= 2:
            cores.append(self._line("warn"))
        return self._toned(cores)

    def _ask_features_or_price(self) -> list[str]:
        cores = []
        missing = [f for f in self.persona.features if f not in self.claimed and f not in self.denied]
        if missing and self.rng.random() < 0.5:
            cores += self._ask_feature(missing[0])
        cores.append(self._line("ask_price"))
        return cores

    def _ask_feature(self, feature: str) -> list[str]:
        self.revealed.add(feature)
        return self._remark_once(("ask", self.car, feature), "ask_feature", feature=feature,
                                 feature_a=feature_phrase(feature))

    def _haggle(self, threshold: int) -> list[str]:
        cores = []
        w = self.willingness()
        if self.asking > 1.3 * w:
            self.patience -= 1
            cores.append(self._line("too_high"))
        offer = int(threshold * min(1.0, 0.88 + 0.02 * self.rounds)) // 100 * 100
        if self.counter is not None:
            offer = max(offer, self.counter)
        offer = min(offer, threshold, self.asking - 1)
        again = self.counter is not None
        self.counter = offer
        cores.append(self._line("counter_again" if again else "counter", money=money(offer)))
        missing = [f for f in self.persona.features if f not in self.claimed and f not in self.denied]
        if missing and self.rng.random() < 0.3:
            cores += self._ask_feature(missing[0])
        return cores
