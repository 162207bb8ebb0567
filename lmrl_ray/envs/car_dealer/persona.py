"""The buyer's hidden persona, how it is drawn, and what it will pay.

A persona (personality, wished brand, type and features, budget, strategy) is the
buyer's secret; the seller never sees it. `willingness` turns it into the most the
buyer pays for a given car, and the haggling and patience tables say how fast it gives
in and how long it stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from lmrl_ray.envs.car_dealer.catalog import Catalog

PERSONALITIES = (
    "abusive", "angry", "insulting", "polite", "respectful",
    "rude", "sarcastic", "talkative", "toxic", "uncommunicative",
)
STRATEGIES = ("loves discounts", "wants all features", "impatient")
PERSONA_KEYS = ("personality", "brand", "type", "features", "budget", "strategy")
# The budgets the original draws from (llm_rl_scripts/car_dealer/env/data.py:39, env.py:98);
# a pinned budget may be any whole dollar amount between the first and the last.
BUDGETS = (10_000, 30_000, 50_000, 70_000, 90_000)
BUDGET_RANGE = (BUDGETS[0], BUDGETS[-1])
MAX_WISHED_FEATURES = 4


@dataclass(frozen=True)
class Persona:
    """The buyer's secret: the seller never sees it."""

    personality: str
    brand: str
    type: str
    features: tuple[str, ...]
    budget: int
    strategy: str


def pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    """One of `items`, drawn with one integer from `rng`."""
    return items[int(rng.integers(len(items)))]


def _check_choice(key: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"car-dealer: persona {key} {value!r} is not valid; valid values: {', '.join(valid)}")


def draw_persona(cat: Catalog, rng: np.random.Generator, pinned: Mapping[str, Any] | None = None) -> Persona:
    """A persona drawn with `rng`; the keys of `pinned` fix those parts (validated).

    As in the original (llm_rl_scripts/car_dealer/env/env.py:93-99) every part is drawn
    on its own: the brand and the type independently (78 pairs, so some buyers wish for
    a car nobody makes, a Porsche truck, and must be sold the nearest one), 1 to 4
    features, and a budget from `BUDGETS`.
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

    personality = pinned.get("personality") or pick(rng, PERSONALITIES)
    strategy = pinned.get("strategy") or pick(rng, STRATEGIES)
    brand = pinned.get("brand") or pick(rng, cat.brands)
    car_type = pinned.get("type") or pick(rng, cat.types)
    if "features" in pinned:
        wished = tuple(f for f in cat.features if f in set(pinned["features"]))
    else:
        count = 1 + int(rng.integers(MAX_WISHED_FEATURES))
        chosen = set(int(i) for i in rng.permutation(len(cat.features))[:count])
        wished = tuple(f for i, f in enumerate(cat.features) if i in chosen)
    budget = int(pinned["budget"]) if "budget" in pinned else pick(rng, BUDGETS)
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


# -- Haggling and patience --------------------------------------------------------------

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
