"""The Twenty Questions oracle: the grounded simulator, which answers `Yes.` or `No.`
from the knowledge table (`objects`) and `No.` to what the table cannot ground."""

from __future__ import annotations

from typing import Sequence

from lmrl_ray.envs.base import Turn
from lmrl_ray.envs.dialogue import Simulator
from lmrl_ray.envs.twenty_questions.objects import KnowledgeTable

YES, NO = "Yes.", "No."
FALLBACK_ANSWER = NO
"""The one answer to a text the oracle cannot ground."""


class GroundedOracle(Simulator):
    """Answers `Yes.` or `No.` from the table about the secret object (a TableObject).

    Nothing the agent says changes the table or the secret, so the answers cannot be
    talked into anything; an ungroundable turn gets FALLBACK_ANSWER and is counted.
    """

    kind = "grounded"

    def __init__(self, table: KnowledgeTable):
        super().__init__()
        self.table = table

    def reply(self, transcript: Sequence[Turn]) -> str:
        meaning = self.table.parse(transcript[-1].text)
        if meaning is None:
            self.unresolved += 1
            return FALLBACK_ANSWER
        return YES if self.table.answer(self.secret, meaning) else NO
