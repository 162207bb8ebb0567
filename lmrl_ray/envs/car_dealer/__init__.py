"""Car Dealer (`car-dealer`): the agent sells a car to a simulated buyer with a hidden persona.

The pieces, bottom up: `catalog` (cars, MSRP ranges, feature prices), `persona` (the
buyer's secret and what it will pay), `reader` (the seller's text as a move),
`phrasing` (the buyer's words), `buyer` (the grounded simulator), `env` (the task) and
`sellers` (the scripted policies).
"""

from lmrl_ray.envs.car_dealer.buyer import GroundedBuyer, Outcome
from lmrl_ray.envs.car_dealer.catalog import Catalog, catalog
from lmrl_ray.envs.car_dealer.env import REWARD_MODES, CarDealerEnv, decision_reward, sale_reward
from lmrl_ray.envs.car_dealer.persona import Persona, draw_persona
from lmrl_ray.envs.car_dealer.sellers import ExpertSeller, RandomSeller, SellerMixture

__all__ = [
    "CarDealerEnv",
    "REWARD_MODES",
    "Catalog",
    "ExpertSeller",
    "GroundedBuyer",
    "Outcome",
    "Persona",
    "RandomSeller",
    "SellerMixture",
    "catalog",
    "decision_reward",
    "draw_persona",
    "sale_reward",
]
