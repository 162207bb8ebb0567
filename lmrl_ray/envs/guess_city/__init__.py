"""Guess My City: find the hidden city by asking its inhabitant questions.

Bottom up: the city table, its checks and the hidden-name guard (`cities.py`), how a
question is read (`reader.py`), the grounded oracle's answers (`oracle.py`), the
environment (`env.py`) and the scripted questioners (`questioners.py`).
"""

from lmrl_ray.envs.guess_city.cities import City, city_names, leaks
from lmrl_ray.envs.guess_city.env import GuessCityEnv
from lmrl_ray.envs.guess_city.oracle import GroundedCityOracle, answer
from lmrl_ray.envs.guess_city.questioners import (
    InformationGainQuestioner,
    QuestionerMixture,
    RandomQuestioner,
)
from lmrl_ray.envs.guess_city.reader import Query, parse

__all__ = [
    "City",
    "GroundedCityOracle",
    "GuessCityEnv",
    "InformationGainQuestioner",
    "Query",
    "QuestionerMixture",
    "RandomQuestioner",
    "answer",
    "city_names",
    "leaks",
    "parse",
]
