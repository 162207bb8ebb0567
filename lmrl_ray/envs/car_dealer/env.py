"""Car Dealer: the agent sells a car to a simulated buyer with a hidden persona.

As in the original (llm_rl_scripts/car_dealer/env/env.py:110), the environment opens
with `Start` and the seller (the agent) speaks first. The seller asks questions, offers
a car, quotes a sticker price and an asking price, and haggles; the buyer
(`buyer.GroundedBuyer`) answers in its persona's tone and finally says
`Output: Decision=Accept MSRP=$X Buy Price=$Y` or `Output: Decision=Reject MSRP=$X`
(amounts with thousands commas). The dialogue after `Start` has at most `max_lines`
lines, so the seller gets ceil(max_lines / 2) turns (25 of 50); the buyer's answer to
the last one is its decision (the original asks the buyer for it at line 50,
env.py:64-71).

Reward: 0 every turn except the last, which pays as `reward_mode` says:

- "sale" (the default): buy price / ((budget + MSRP) / 2) on a sale, 0 otherwise;
- "fancy" (the original's default, data.py:152-164): the same on a sale,
  -(budget - MSRP) / MSRP on no sale (so refusing a car priced above the budget pays),
  0 when the MSRP is 0;
- "revenue" (the original's PPO, policies.py:153): buy price / 1000 on a sale, else 0.

"fancy" pays a seller for quoting stickers far above the budget and never selling,
which is why it is not the default (TASKS.md). `info["success"]` is a sale; the last
step's info also carries `msrp` and `buy_price`.

Any text is a legal utterance: the buyer answers empty, gibberish, unicode or enormous
text with a confused or annoyed line in its tone, and the turn counts.
`info["invalid_action"]` is True only for text with no letter or digit in any script
(empty, punctuation, symbols, control characters); gibberish words are text.

The scripted sellers (`sellers`) play the agent's side for data and normalisation.
"""

from __future__ import annotations

from typing import Any

from lmrl_ray.envs.base import AGENT, TextEnv, Turn
from lmrl_ray.envs.car_dealer.buyer import GroundedBuyer, Outcome
from lmrl_ray.envs.car_dealer.catalog import catalog
from lmrl_ray.envs.car_dealer.persona import draw_persona
from lmrl_ray.envs.car_dealer.reader import is_text_like
from lmrl_ray.envs.dialogue import build_simulator

OPENING = "Start"
REWARD_MODES = ("sale", "fancy", "revenue")


def sale_reward(price: float, budget: float, msrp: float) -> float:
    """The reward of a sale (TASKS.md): price / ((budget + MSRP) / 2)."""
    return float(price) / ((float(budget) + float(msrp)) / 2)


def check_reward_mode(mode: str) -> None:
    if mode not in REWARD_MODES:
        raise ValueError(f"car-dealer: unknown reward_mode {mode!r}; valid reward modes: {', '.join(REWARD_MODES)}")


def decision_reward(outcome: Outcome, budget: float, mode: str = "sale") -> float:
    """The reward of the buyer's decision under `mode` (one of REWARD_MODES)."""
    check_reward_mode(mode)
    if mode == "revenue":
        return outcome.price / 1000 if outcome.accepted else 0.0
    if mode == "fancy" and outcome.msrp == 0:
        return 0.0  # the original's guard: a line with no car pays nothing
    if outcome.accepted:
        return sale_reward(outcome.price, budget, outcome.msrp)
    if mode == "fancy":
        return -(float(budget) - outcome.msrp) / outcome.msrp
    return 0.0


class CarDealerEnv(TextEnv):
    """The agent is the seller; the buyer is a simulator with a hidden persona.

    `options={"persona": {...}}` pins any of personality, brand, type, features,
    budget and strategy (the rest is drawn with the episode's generator).
    """

    task = "car-dealer"
    option_names = ("persona",)

    def __init__(self, *, simulator="grounded", max_lines: int = 50, reward_mode: str = "sale",
                 render_mode: str | None = None):
        if max_lines < 2:
            raise ValueError(f"{self.task}: max_lines must be at least 2 (seller, buyer), got {max_lines}")
        check_reward_mode(reward_mode)
        super().__init__(max_agent_turns=(max_lines + 1) // 2, render_mode=render_mode)
        self.max_lines = max_lines
        self.reward_mode = reward_mode
        self.catalog = catalog()
        grounded = {"grounded": lambda: GroundedBuyer(self.catalog, self.max_agent_turns)}
        self.buyer = build_simulator(self.task, simulator, grounded)
        self.persona = None

    @property
    def simulator(self):
        """The buyer, under the name the other dialogue tasks give their simulator."""
        return self.buyer

    def _reset(self, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.persona = draw_persona(self.catalog, self.np_random, options.get("persona"))
        self.buyer.reset(self.persona, self.np_random)
        return OPENING, {}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        reply = self.buyer.reply([*self.transcript, Turn(AGENT, action)])
        info: dict[str, Any] = {"invalid_action": not is_text_like(action)}
        outcome = self.buyer.outcome
        if outcome is None:
            return reply, 0.0, False, info
        info.update(success=outcome.accepted, msrp=outcome.msrp, buy_price=outcome.price)
        return reply, decision_reward(outcome, self.persona.budget, self.reward_mode), True, info
