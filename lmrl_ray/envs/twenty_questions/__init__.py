"""Twenty Questions: find the hidden object with yes/no questions.

Bottom up: the knowledge table and how a question is understood (`objects.py`), the
grounded oracle (`oracle.py`), the environment (`env.py`) and the scripted questioners
(`questioners.py`).
"""

from lmrl_ray.envs.twenty_questions.env import TwentyQuestionsEnv
from lmrl_ray.envs.twenty_questions.objects import OBJECTS, KnowledgeTable, load_table
from lmrl_ray.envs.twenty_questions.oracle import GroundedOracle
from lmrl_ray.envs.twenty_questions.questioners import (
    InformationGainQuestioner,
    QuestionerMixture,
    RandomQuestioner,
)

__all__ = [
    "GroundedOracle",
    "InformationGainQuestioner",
    "KnowledgeTable",
    "OBJECTS",
    "QuestionerMixture",
    "RandomQuestioner",
    "TwentyQuestionsEnv",
    "load_table",
]
