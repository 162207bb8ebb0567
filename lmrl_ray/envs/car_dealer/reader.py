"""How the buyer reads the seller: catalog names, money amounts and intents in free text.

One seller utterance becomes a `SellerMove`: the car named (brand, type), the features
said to be on or off it, asking, sticker (MSRP) and discount amounts, and whether it
asks for needs, features or the budget, agrees, or pushes. Reading is by whole-word
lexicons and regular expressions over clauses, so it is exact, cheap and the same for a
scripted seller and a language model. The scripted sellers read the buyer's lines with
the same lexicons and `find_amounts`.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from lmrl_ray.envs.car_dealer.catalog import Catalog

# Seller text beyond this many characters is not read (the buyer says so): an LM seller
# speaks one line, and a cap keeps the regular expressions cheap on enormous input.
MAX_READ_CHARS = 1_000
# Amounts above this are jokes, not car prices; digits are counted before int() so a
# 5,000-digit number neither slows down nor trips Python's int-conversion limit.
MAX_CREDIBLE_AMOUNT = 10_000_000

# -- Catalog names ------------------------------------------------------------------------

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


class Lexicon:
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
def lexicons(cat: Catalog) -> tuple[Lexicon, Lexicon, Lexicon]:
    """Brand, type and feature finders for a catalog."""
    return (Lexicon(cat.brands, _BRAND_ALIASES, plurals=True),
            Lexicon(cat.types, _TYPE_ALIASES, plurals=True),
            Lexicon(cat.features, _FEATURE_ALIASES, plurals=False))


# -- Amounts and intents -----------------------------------------------------------------

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
_DECISION_FORMAT = re.compile(r"decision\s*=|output\s*:|buy\s*price\s*=|msrp\s*=", re.IGNORECASE)
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


def imitates_decision(text: str) -> bool:
    """The text writes part of the buyer's `Output: Decision=...` line (the buyer ignores
    such a line rather than let a seller decide for it)."""
    return bool(_DECISION_FORMAT.search(text))
