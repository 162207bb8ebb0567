"""The scripted Car Dealer sellers: the data behaviour, the expert and a random seller.

They read only the dialogue (and the dealer's catalog), never the persona.
`DiscountSeller`, `FeatureSeller` and `ConciseSeller` are the three strategies of the
paper's data, `SellerMixture` mixes them per episode (the data behaviour),
`ExpertSeller` is the normalisation maximum and `RandomSeller` says random lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from lmrl_ray.envs.base import ENV, ScriptedPolicy, TextEnv, Turn
from lmrl_ray.envs.car_dealer.catalog import Catalog, catalog
from lmrl_ray.envs.car_dealer.persona import pick
from lmrl_ray.envs.car_dealer.phrasing import feature_phrase, fill, join, type_noun
from lmrl_ray.envs.car_dealer.reader import find_amounts, lexicons

# -- What a seller reads in the buyer's lines ---------------------------------------------


@dataclass
class BuyerNotes:
    """What a seller has learned from the buyer's lines (never from the persona)."""

    brand: str | None = None
    type: str | None = None
    features: list[str] = field(default_factory=list)
    budget: int | None = None
    no_more_features: bool = False
    counter: int | None = None
    """The amount the buyer offered in its latest line."""
    asked_feature: str | None = None
    """A feature the buyer asked about in its latest line."""
    warned: bool = False
    """The latest line says the buyer is about to leave."""


_BUDGET_WORDS = ("budget", "spend")
_WARNINGS = ("walk out", "all day", "last chance", "running out", "leaving soon")
_NO_MORE = ("everything on my list", "nothing else", "covers it", "that's all")


def read_buyer(cat: Catalog, transcript: Sequence[Turn]) -> BuyerNotes:
    """Read the buyer's lines. The buyer names its wishes before anything it is offered
    ("I wanted a Toyota, not a Ford"), so the first brand and type it says are its wishes."""
    brands, types, features = lexicons(cat)
    notes = BuyerNotes()
    lines = [t.text for t in transcript if t.role == ENV]
    for i, line in enumerate(lines):
        latest = i == len(lines) - 1
        for sentence in line.replace("?", "?|").replace(". ", ".|").split("|"):
            low = sentence.lower()
            if notes.brand is None and brands.find(sentence):
                notes.brand = brands.find(sentence)[0][0]
            if notes.type is None and types.find(sentence):
                notes.type = types.find(sentence)[0][0]
            named = [name for name, _ in features.find(sentence)]
            notes.features += [f for f in named if f not in notes.features]
            amounts = [a.value for a in find_amounts(sentence) if a.kind in ("price", "reference")]
            if any(word in low for word in _BUDGET_WORDS):
                if amounts:
                    notes.budget = int(amounts[0])
            elif amounts and latest:
                notes.counter = int(amounts[0])
            if any(phrase in low for phrase in _NO_MORE):
                notes.no_more_features = True
            if latest and named and "?" in sentence:
                notes.asked_feature = named[0]
            if latest and any(w in low for w in _WARNINGS):
                notes.warned = True
    return notes


# -- How sellers talk -------------------------------------------------------------------

_SELLER_LINES: dict[str, tuple[str, ...]] = {
    "greet": ("Hi there, welcome in!", "Hello and welcome!", "Welcome to the dealership!", "Good morning, welcome!"),
    "invite": ("How can I help you today?", "What brings you in today?", "What can I do for you?"),
    "ask_needs": ("What are you looking for today?", "What kind of car do you have in mind?",
                  "Which brand and type of car interests you?", "Tell me what you need in a car."),
    "ask_budget": ("What's your budget?", "How much are you looking to spend?", "What price range works for you?",
                   "Do you have a budget in mind?"),
    "ask_features": ("Any features you can't live without?", "Which features matter most to you?",
                     "Anything else on your wish list, feature-wise?", "What features do you need?"),
    "offer": ("I've got a great {car} for you{with_features}. {sticker}{price}",
              "Take a look at this {car}{with_features}. {sticker}{price}",
              "How about this {car}{with_features}? {sticker}{price}",
              "This {car}{with_features} just came in. {sticker}{price}"),
    "offer_concise": ("{Car}{with_features}. {sticker}{price}", "{Car}: {sticker}{price}",
                      "Got a {car}{with_features}. {sticker}{price}"),
    "sticker": ("The MSRP is {m}. ", "It lists at {m}. ", "Sticker price is {m}. ", "MSRP {m}. "),
    "price": ("I can let it go for {p}.", "It's yours for {p}.", "I'm asking {p}.", "For you, {p}.",
              "I can do {p} today."),
    "price_concise": ("{p}.", "Yours for {p}.", "Price: {p}."),
    "concede": ("I can come down to {p}.", "How about {p}?", "Let's meet at {p}.", "Best I can do is {p}.",
                "I'll go to {p}.", "Okay, {p} then."),
    "discount": ("I can knock {d} off, so {p}.", "Here's a discount of {d}: {p}.",
                 "Special deal: {d} off, that's {p}.", "Let me knock off {d}.", "I'll take {d} off the price."),
    "discount_pct": ("I'll take {pct}% off, bringing it to {p}.", "How about {pct}% off? That's {p}.",
                     "{pct}% off for you: {p}."),
    "hold": ("That's already a great price, I'm staying at {p}.", "I can't go lower than {p}.",
             "{p} is my final price.", "Sorry, {p} is as low as it goes."),
    "agree": ("Deal! {p} it is.", "You've got a deal at {p}.", "Sounds good, {p}.", "Alright, I accept {p}."),
    "confirm_feature": ("Yes, it has {feature}.", "It does come with {feature}.",
                        "Absolutely, it has {feature}."),
    "pitch_feature": ("It also has {feature}, which you'll love.", "Did I mention it has {feature}?",
                      "Plus {feature} comes standard on this one."),
}


def _say(rng: np.random.Generator, intent: str, **slots: Any) -> str:
    return fill(pick(rng, _SELLER_LINES[intent]), **slots)


def _dollars(rng: np.random.Generator, amount: int) -> str:
    """A price in one of the ways sellers write them: mostly $35,500, else 35.5k or 35,500 dollars."""
    form = int(rng.integers(6))
    if form == 3 and amount % 100 == 0:
        return f"{amount / 1000:g}k"
    if form == 4:
        return f"{amount:,} dollars"
    return f"${amount:,}"


def _car_name(brand: str, car_type: str) -> str:
    """"Toyota SUV", "Tesla electric car"."""
    return f"{brand} {type_noun(car_type)}"


def _round(amount: float, step: int = 100) -> int:
    return int(amount) // step * step


def _worth(notes: BuyerNotes, car: tuple[str, str]) -> float:
    """A seller's rule of thumb (not the buyer's secret): what a buyer pays for `car`, in
    budgets; most for the brand and type it asked for with its features."""
    brand_ok, type_ok = car[0] == notes.brand, car[1] == notes.type
    return 0.8 + 0.5 * (0.5 * brand_ok + 0.3 * type_ok + 0.2)


_WISH_WORTH = 1.3


@dataclass(frozen=True)
class SellerStyle:
    """How a scripted seller negotiates. Probabilities are drawn once per episode."""

    ask_needs: float
    """Chance of asking what the buyer wants before offering (when its brand is unknown)."""
    ask_budget: float
    """Chance of asking the budget before offering."""
    ask_features: float
    """Chance of asking about features before offering."""
    quote_sticker: float
    """Chance of quoting a sticker price (MSRP) with the offer."""
    sticker_over_budget: float
    """Quoted sticker, when the budget is known: the stated budget times this for the car
    the buyer wished for, less for a car further from its wish (`_worth`)."""
    sticker_spread: float
    """Without a budget, the quoted sticker lies in this lowest share of the car's MSRP range."""
    concession: float
    """Share of the gap to the buyer's counter-offer given up per round."""
    min_step: int
    """Smallest concession, in dollars."""
    close_gap: float
    """Agree to the buyer's counter when the gap is at most this share of the ask."""
    floor: float
    """Never ask less than sticker times this."""
    talk: str
    """Wording: "discount" (concessions said as discounts), "features" (pitches features
    instead of conceding, sometimes) or "concise" (short lines, features often unsaid)."""
    extra_features: int = 0
    """Features pitched beyond the ones the buyer asked for."""
    switch_to_wish: float = 0.0
    """Chance of offering the buyer's wished car when it turns down a different one."""
    upsell: float = 0.0
    """Chance of offering, once the budget is known, the car expected to pay most for it
    (a dearer brand for a rich buyer, a cheaper one for a poor one) instead of the wish."""
    expert: bool = False
    """Ask everything at once (at most two question turns, none once the buyer grows
    impatient), pick the brand whose prices fit the budget, close when the buyer is
    about to leave."""


DISCOUNT_STYLE = SellerStyle(ask_needs=0.8, ask_budget=1.0, ask_features=0.5, quote_sticker=1.0, upsell=1.0,
                             sticker_over_budget=1.3, sticker_spread=1.0, concession=0.1, min_step=300,
                             close_gap=0.02, floor=0.98, talk="discount")
FEATURE_STYLE = SellerStyle(ask_needs=0.9, ask_budget=1.0, ask_features=0.9, quote_sticker=1.0, upsell=1.0,
                            sticker_over_budget=1.3, sticker_spread=1.0, concession=0.15, min_step=300,
                            close_gap=0.02, floor=0.98, talk="features", extra_features=2, switch_to_wish=0.5)
CONCISE_STYLE = SellerStyle(ask_needs=0.5, ask_budget=1.0, ask_features=0.0, quote_sticker=0.8, upsell=1.0,
                            sticker_over_budget=1.3, sticker_spread=1.0, concession=0.25, min_step=1000,
                            close_gap=0.05, floor=0.98, talk="concise")
EXPERT_STYLE = SellerStyle(ask_needs=1.0, ask_budget=1.0, ask_features=1.0, quote_sticker=1.0,
                           sticker_over_budget=1.45, sticker_spread=0.4, concession=0.05, min_step=100,
                           close_gap=0.02, floor=0.0, talk="discount", switch_to_wish=1.0, upsell=1.0,
                           expert=True)


class StyledSeller(ScriptedPolicy):
    """A seller that asks, offers and haggles as its `SellerStyle` says.

    Reads only the dialogue and the catalog. State: the questions it asked, the car it
    offers, the sticker it quoted and its current asking price.
    """

    def __init__(self, style: SellerStyle):
        self.style = style
        self.catalog = catalog()

    def reset(self, env: TextEnv, rng: np.random.Generator) -> None:
        s = self.style
        self.plan = [q for q, p in (("needs", s.ask_needs), ("features", s.ask_features), ("budget", s.ask_budget))
                     if rng.random() < p]
        self.switches = rng.random() < s.switch_to_wish
        self.upsells = rng.random() < s.upsell
        self.asked: list[str] = []
        self.question_turns = 0
        self.car: tuple[str, str] | None = None
        self.sticker = 0
        self.ask = 0
        self.features: list[str] = []
        self.fresh = True

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        # A policy reused without reset() starts over at a new episode's first turn.
        if len(env.transcript) == 1 and not getattr(self, "fresh", False):
            self.reset(env, rng)
        self.fresh = False
        notes = read_buyer(self.catalog, env.transcript)
        if len(env.transcript) == 1:
            # The seller speaks first (after `Start`): a greeting and its first question.
            return _say(rng, "greet") + " " + (self._question(notes, rng) or _say(rng, "invite"))
        if self.car is None:
            return self._question(notes, rng) or self._offer(notes, rng)
        if self.switches and self._wish_differs(notes):
            self.switches = False
            return self._offer(notes, rng)
        return self._haggle(notes, rng)

    # -- Before the offer --------------------------------------------------------------

    def _question(self, notes: BuyerNotes, rng: np.random.Generator) -> str | None:
        """The next question(s), or None when it is time to offer."""
        wanted = {
            "needs": notes.brand is None,
            "features": not notes.no_more_features,
            "budget": notes.budget is None,
        }
        if self.style.expert:
            if self.question_turns >= 2 or (notes.warned and self.question_turns):
                return None
            self.question_turns += 1
            questions = [q for q in self.plan if wanted[q]]
            return " ".join(_say(rng, f"ask_{q}") for q in questions) or None
        for question in self.plan:
            if wanted[question] and question not in self.asked:
                self.asked.append(question)
                return _say(rng, f"ask_{question}")
        return None

    def _choose_car(self, notes: BuyerNotes, rng: np.random.Generator) -> tuple[str, str]:
        cat = self.catalog
        car_type = notes.type or pick(rng, cat.types)
        known = self._known_car(notes, car_type)
        if known is not None:
            return known
        brands = cat.brands_selling(car_type)
        return pick(rng, brands), car_type

    def _known_car(self, notes: BuyerNotes, car_type: str) -> tuple[str, str] | None:
        """The car to offer from what the buyer said, or None when the brand is a guess."""
        if self.upsells and notes.budget is not None:
            return self._best_paying_car(notes)
        if notes.brand is not None:
            types = self.catalog.types_of(notes.brand)
            return notes.brand, car_type if car_type in types else types[0]
        if not self.style.expert:
            return None
        # The expert without a brand or budget: the middle-priced brand of the type.
        by_price = sorted(self.catalog.brands_selling(car_type), key=lambda b: self.catalog.msrp_ranges[(b, car_type)])
        return by_price[len(by_price) // 2], car_type

    def _sticker_for(self, notes: BuyerNotes, car: tuple[str, str]) -> float:
        """The sticker to quote for `car` to a buyer of known budget: the budget times the
        style's markup, less for a car further from the buyer's wish."""
        return notes.budget * self.style.sticker_over_budget * _worth(notes, car) / _WISH_WORTH

    def _best_paying_car(self, notes: BuyerNotes) -> tuple[str, str]:
        """The car expected to pay most for the stated budget: the reward is price / ((budget
        + MSRP) / 2), so a rich buyer who wishes for a cheap car pays best for a dearer one
        and a poor one for the cheapest. Ties go to the wished brand and type."""
        cat = self.catalog
        extras = sum(cat.feature_prices[f] for f in notes.features)

        def expected(car: tuple[str, str]) -> tuple[float, bool, bool]:
            low, high = cat.msrp_ranges[car]
            worth = notes.budget * _worth(notes, car)
            sticker = min(high, max(low + extras, self._sticker_for(notes, car)))
            return 2 * min(worth, sticker) / (notes.budget + sticker), car[0] == notes.brand, car[1] == notes.type

        return max(cat.msrp_ranges, key=expected)

    def _wish_differs(self, notes: BuyerNotes) -> bool:
        """The buyer has since named a wish that the car on offer does not meet."""
        wished = self._known_car(notes, notes.type or self.car[1])
        return wished is not None and wished != self.car

    def _offer(self, notes: BuyerNotes, rng: np.random.Generator) -> str:
        s = self.style
        self.car = self._choose_car(notes, rng)
        low, high = self.catalog.msrp_ranges[self.car]
        self.features = list(notes.features)
        if s.extra_features:
            others = [f for f in self.catalog.features if f not in self.features]
            picks = rng.permutation(len(others))[: s.extra_features]
            self.features += [others[int(i)] for i in picks]
        concise = s.talk == "concise"
        if concise and rng.random() < 0.5:
            self.features = []
        quote = rng.random() < s.quote_sticker
        if quote and notes.budget is not None:
            wished_sticker = _round(self._sticker_for(notes, self.car), 500)
        elif quote:
            wished_sticker = _round(low + (high - low) * rng.uniform(0, s.sticker_spread), 500)
        else:
            wished_sticker = None
        # The sticker as the buyer will compute it: clipped to the range, at least base + features.
        self.sticker = self.catalog.msrp(*self.car, self.features, wished_sticker)
        self.ask = self.sticker
        if s.expert and notes.warned and notes.budget is not None:
            # About to lose the buyer: open at its stated budget, which it almost always takes.
            self.ask = min(self.sticker, _round(notes.budget))
        with_features = f" with {join([feature_phrase(f) for f in self.features])}" if self.features else ""
        sticker = _say(rng, "sticker", m=_dollars(rng, self.sticker)) if quote else ""
        price = _say(rng, "price_concise" if concise else "price", p=_dollars(rng, self.ask))
        return _say(rng, "offer_concise" if concise else "offer", car=_car_name(*self.car),
                    with_features=with_features, sticker=sticker, price=price)

    # -- After the offer ---------------------------------------------------------------

    def _haggle(self, notes: BuyerNotes, rng: np.random.Generator) -> str:
        s = self.style
        parts = []
        if notes.asked_feature:
            if notes.asked_feature not in self.features:
                self.features.append(notes.asked_feature)
            parts.append(_say(rng, "confirm_feature", feature=feature_phrase(notes.asked_feature)))
        elif s.talk == "features" and rng.random() < 0.4:
            unsaid = [f for f in self.catalog.features if f not in self.features]
            if unsaid:
                # A pitch instead of a concession: the price stays this turn.
                feature = pick(rng, unsaid)
                self.features.append(feature)
                parts += [_say(rng, "pitch_feature", feature=feature_phrase(feature)),
                          _say(rng, "price", p=_dollars(rng, self.ask))]
                return " ".join(parts)
        counter = notes.counter
        floor = _round(self.sticker * s.floor)
        if counter is not None and counter < self.ask:
            gap = self.ask - counter
            if (gap <= s.close_gap * self.ask or (s.expert and notes.warned)) and counter >= floor:
                self.ask = counter
                parts.append(_say(rng, "agree", p=_dollars(rng, counter)))
                return " ".join(parts)
            new = max(_round(self.ask - max(s.min_step, s.concession * gap)), counter, floor)
            if new < self.ask:
                line, self.ask = self._concession(new, rng)
                parts.append(line)
            else:
                parts.append(_say(rng, "hold", p=_dollars(rng, self.ask)))
        else:
            parts.append(_say(rng, "price", p=_dollars(rng, self.ask)))
        return " ".join(parts)

    def _concession(self, new: int, rng: np.random.Generator) -> tuple[str, int]:
        """The line conceding from the current ask to about `new`, and the new ask."""
        if self.style.talk != "discount":
            return _say(rng, "concede", p=_dollars(rng, new)), new
        pct = round(100 * (self.ask - new) / self.ask)
        if pct >= 1 and rng.random() < 0.4:
            # The line states the resulting price, which the buyer reads over its own arithmetic.
            new = _round(self.ask * (1 - pct / 100))
            return _say(rng, "discount_pct", pct=pct, p=_dollars(rng, new)), new
        return _say(rng, "discount", d=_dollars(rng, self.ask - new), p=_dollars(rng, new)), new


class DiscountSeller(StyledSeller):
    """Quotes a sticker and concedes in discounts ("I'll knock $2,000 off")."""

    def __init__(self):
        super().__init__(DISCOUNT_STYLE)


class FeatureSeller(StyledSeller):
    """Asks about needs and features, pitches features, concedes slowly."""

    def __init__(self):
        super().__init__(FEATURE_STYLE)


class ConciseSeller(StyledSeller):
    """Few questions, short lines, fast concessions."""

    def __init__(self):
        super().__init__(CONCISE_STYLE)


class ExpertSeller(StyledSeller):
    """Asks needs, features and budget, offers the matching car (or the brand nearest the
    budget), quotes a sticker near the budget, concedes slowly in discounts and closes
    when the buyer is about to leave. Its mean return is our normalisation maximum."""

    def __init__(self):
        super().__init__(EXPERT_STYLE)


class SellerMixture(ScriptedPolicy):
    """The data behaviour: per episode, one of the three strategies (weights `styles`)
    with its concession, closing gap and sticker markup jittered, so that the data holds
    many negotiators rather than three.

    Tuned to the paper's Table 1 (success 0.53, mean return 0.562, 16.5 lines per
    dialogue, read as lines after `Start`: two per seller turn); measured over 2,000
    episodes (seed 0): success 0.567, mean return 0.532, 8.55 seller turns (17.1 lines).
    A fifth of the buyers (budget $10,000, below every base trim) never buy from these
    sellers, whose floor stays near the sticker.
    """

    styles = ((DISCOUNT_STYLE, 0.4), (FEATURE_STYLE, 0.3), (CONCISE_STYLE, 0.3))

    def reset(self, env: TextEnv, rng: np.random.Generator) -> None:
        weights = np.array([w for _, w in self.styles])
        style = self.styles[int(rng.choice(len(self.styles), p=weights / weights.sum()))][0]
        style = replace(style,
                        concession=style.concession * rng.uniform(0.8, 1.2),
                        close_gap=style.close_gap * rng.uniform(0.8, 1.2),
                        sticker_over_budget=style.sticker_over_budget * rng.uniform(0.9, 1.1))
        self.seller = StyledSeller(style)
        self.seller.reset(env, rng)

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        if len(env.transcript) == 1 and not (hasattr(self, "seller") and self.seller.fresh):
            self.reset(env, rng)
        return self.seller.act(env, rng)


class RandomSeller(ScriptedPolicy):
    """Random lines from the sellers' phrasings with random cars, features and prices."""

    def act(self, env: TextEnv, rng: np.random.Generator) -> str:
        cat = catalog()
        brand, car_type = pick(rng, list(cat.msrp_ranges))
        feature = pick(rng, cat.features)
        intent = pick(rng, list(_SELLER_LINES))
        price = _round(rng.uniform(5_000, 120_000))
        return _say(rng, intent, car=_car_name(brand, car_type), with_features=f" with {feature}",
                    sticker="", price=_say(rng, "price", p=_dollars(rng, price)), m=_dollars(rng, price),
                    p=_dollars(rng, price), pct=int(rng.integers(1, 20)), d=_dollars(rng, _round(price * 0.05)),
                    feature=feature)
