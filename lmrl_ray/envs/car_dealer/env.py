"""Car Dealer: the agent sells a car to a simulated buyer with a hidden persona.

The buyer (`buyer.GroundedBuyer`) speaks first: a greeting that names some of its
wishes. The seller (the agent) asks questions, offers a car, quotes a sticker price and
an asking price, and haggles; the buyer answers in its persona's tone and finally says
`Output: Decision=Accept MSRP=$X Buy Price=$Y` or `Output: Decision=Reject MSRP=$X`
(X is the MSRP of the car on the table, 0 if none was offered). The dialogue has at
most `max_lines` lines, the buyer's first included, so the seller gets
(max_lines - 1) // 2 turns (24 of 50); at the last one the buyer decides.

Reward: 0 every turn except the last, which pays buy price / ((budget + MSRP) / 2) on
a sale and 0 on a rejection (TASKS.md). `info["success"]` is a sale; the last step's
info also carries `msrp` and `buy_price`.

Any text is a legal utterance: the buyer answers empty, gibberish, unicode or enormous
text with a confused or annoyed line in its tone, and the turn counts.
`info["invalid_action"]` is True only for text with no letter or digit in any script
(empty, punctuation, symbols, control characters); gibberish words are text.

The scripted sellers (`sellers`) play the agent's side for data and normalisation.
"""

from __future__ import annotations

from typing import Any

from lmrl_ray.envs.base import AGENT, TextEnv, Turn
from lmrl_ray.envs.car_dealer.buyer import GroundedBuyer
from lmrl_ray.envs.car_dealer.catalog import catalog
from lmrl_ray.envs.car_dealer.persona import draw_persona
from lmrl_ray.envs.car_dealer.reader import is_text_like
from lmrl_ray.envs.dialogue import build_simulator


def sale_reward(price: float, budget: float, msrp: float) -> float:
    """The reward of a sale (TASKS.md): price / ((budget + MSRP) / 2)."""
    return float(price) / ((float(budget) + float(msrp)) / 2)


class CarDealerEnv(TextEnv):
    """The agent is the seller; the buyer is a simulator with a hidden persona.

    `options={"persona": {...}}` pins any of personality, brand, type, features,
    budget and strategy (the rest is drawn with the episode's generator).
    """

    task = "car-dealer"
    option_names = ("persona",)

    def __init__(self, *, simulator="grounded", max_lines: int = 50, render_mode: str | None = None):
        if max_lines < 3:
            raise ValueError(f"{self.task}: max_lines must be at least 3 (buyer, seller, buyer), got {max_lines}")
        super().__init__(max_agent_turns=(max_lines - 1) // 2, render_mode=render_mode)
        self.max_lines = max_lines
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
        return self.buyer.reply([]), {}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        reply = self.buyer.reply([*self.transcript, Turn(AGENT, action)])
        info: dict[str, Any] = {"invalid_action": not is_text_like(action)}
        outcome = self.buyer.outcome
        if outcome is None:
            return reply, 0.0, False, info
        reward = sale_reward(outcome.price, self.persona.budget, outcome.msrp) if outcome.accepted else 0.0
        info.update(success=outcome.accepted, msrp=outcome.msrp, buy_price=outcome.price)
        return reply, reward, True, info
