"""The Car Dealer buyer: a grounded simulator of a shopper with a hidden persona.

The paper's buyer was a language model distilled from GPT-3.5 dialogues, and reviewers
found that sellers could talk it into rewards. This buyer is rule based: it reads each
seller line (`reader`), keeps the state of the negotiation, and answers in its
persona's tone (`phrasing`).

What the buyer pays is bounded by its hidden *willingness to pay* W for the car on the
table (`persona.willingness`); it accepts an asking price P only when P is credible and
P <= W * min(1, theta + delta * rounds), where `rounds` counts the earlier seller turns
that had a price on the table: a haggler starts low and gives in over time, never
above W. Above that threshold it counters below it. It leaves (rejects) when its
patience runs out, and at the turn cap.

The MSRP of the car on the table is the sticker the seller quoted for it (the first
quote counts) or, unquoted, the base trim; in both cases at least the base plus the
features the seller says the car has, and clipped to the catalog's range. A buyer who
leaves before any car was offered names the base MSRP of the car it came for
(`Catalog.wished_msrp`): the original's parser reads no decision from `MSRP=$0`
(llm_rl_scripts/car_dealer/env/data.py:179-180).

The seller speaks first (the environment opens with `Start`); the buyer's first reply
greets and, unless the seller asked what it wants or already offered a car, says some
of what it came for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lmrl_ray.envs.base import Turn
from lmrl_ray.envs.car_dealer.catalog import Catalog
from lmrl_ray.envs.car_dealer.persona import (
    DEFAULT_HAGGLE,
    DODGE_BUDGET,
    HAGGLE,
    PATIENCE,
    Persona,
    pick,
    willingness,
)
from lmrl_ray.envs.car_dealer.phrasing import (
    article,
    feature_phrase,
    greeting,
    in_tone,
    join,
    money,
    output_line,
    say,
    type_noun,
)
from lmrl_ray.envs.car_dealer.reader import (
    MAX_READ_CHARS,
    SellerMove,
    imitates_decision,
    is_text_like,
    read_seller,
)
from lmrl_ray.envs.dialogue import Simulator


@dataclass(frozen=True)
class Outcome:
    """The buyer's decision: the MSRP its line names (the car on the table, else the car
    it came for) and the price paid."""

    accepted: bool
    msrp: int
    price: int | None
    willingness: int | None
    """W at the moment of the decision, for checks (None when no car was on the table)."""


class GroundedBuyer(Simulator):
    """The rule-based buyer: `reply` answers the seller's latest line (the last turn of
    the transcript); `outcome` is set by its last."""

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
        return say(intent, self.persona.personality, self.rng, **slots)

    def _car_phrase(self, with_brand: bool) -> str:
        """The wished car with its article: "a Toyota SUV", or "an SUV"."""
        p = self.persona
        return article(f"{p.brand} {type_noun(p.type)}" if with_brand else type_noun(p.type))

    def _wish(self) -> list[str]:
        """What a buyer says it came for when it walks in: always the type, sometimes the
        brand and one feature, never everything."""
        p = self.persona
        talkative = p.personality == "talkative"
        shy = p.personality == "uncommunicative"
        show_brand = self.rng.random() < (0.8 if talkative else 0.2 if shy else 0.5)
        # Reveal some wishes but never all: one feature at most, none if that would be everything.
        show_feature = (len(p.features) > 1 or not show_brand) and self.rng.random() < (0.7 if talkative else 0.35)
        self.revealed |= {"type"} | ({"brand"} if show_brand else set())
        cores = [self._line("wish", car=self._car_phrase(show_brand))]
        if show_feature:
            feature = pick(self.rng, p.features)
            self.revealed.add(feature)
            cores.append(self._line("wish_feature", features=feature_phrase(feature)))
        return cores

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
            cores.append(self._line("answer_features", features=join([feature_phrase(f) for f in told])))
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
            remarks += self._remark_once(("brand", car), "wrong_brand", brand=p.brand, brand_a=article(p.brand),
                                         offered_a=article(brand))
        if car_type != p.type:
            self.revealed.add("type")
            remarks += self._remark_once(("type", car), "wrong_type", type_a=article(type_noun(p.type)),
                                         offered_type_a=article(type_noun(car_type)))
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
        if imitates_decision(text):
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
        msrp = self.msrp() if self.car is not None else self.catalog.wished_msrp(self.persona.brand, self.persona.type)
        price = self.asking if accepted else None
        self.outcome = Outcome(accepted, msrp, price, self.willingness())
        return output_line(accepted, msrp, price)

    def reply(self, transcript: Sequence[Turn]) -> str:
        first = self.seller_turns == 0
        self.seller_turns += 1
        self.patience -= 1
        cores = self._read(transcript[-1].text)
        if first and self.car is None and "type" not in self.revealed:
            cores += self._wish()
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
        if first:
            return " ".join(x for x in [greeting(self.persona.personality, self.rng), *cores] if x)
        return in_tone(cores, self.persona.personality, self.rng)

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
