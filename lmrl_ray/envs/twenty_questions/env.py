"""Twenty Questions: find the hidden object with yes/no questions.

The transcript starts with `Questions:`. Each agent turn is a question; the simulator
answers `Yes.` or `No.`. The episode ends on a correct guess, or after `max_questions`
questions. A correct guess is the source's (`llm_rl_scripts/twenty_questions/env/data.py`,
`is_done`, and `create_trajectory_from_history`, which ends the game on its `Yes.`): a
question that ends with a name of the hidden object (one of its variants) and holds no
other noun, such as "Is it a cat?", "Is the object a cat?", "Is it a kind of cat?" or
"Is it a small cat?"; "Is it a cat or a dog?" is none (see `objects.GUESS_FRAME_WORDS`).
Reward: -1 per question, 0 for the correctly guessing one. The policy reads the whole
transcript.

The default simulator is the grounded oracle (`oracle`): it answers from our knowledge
table (`objects`) and gives its one fallback answer, `No.`, to anything it cannot
ground. Such a turn (no `?`, empty, gibberish, several objects at once) still costs -1 and
is flagged `info["invalid_action"]`; `info["unresolved"]` counts them over the episode.
The last step's info names the hidden object (`info["object"]`) for labelling data.
Whether a guess is correct is decided by the environment from the table, never by the
simulator's reply, so no simulator (a future LM one included) can be talked into a win.
"""

from __future__ import annotations

from typing import Any

from lmrl_ray.envs.base import AGENT, TextEnv, Turn
from lmrl_ray.envs.dialogue import build_simulator
from lmrl_ray.envs.twenty_questions.objects import GUESS, Meaning, load_table
from lmrl_ray.envs.twenty_questions.oracle import YES, GroundedOracle

FIRST_OBSERVATION = "Questions:"


class TwentyQuestionsEnv(TextEnv):
    """Twenty Questions against a simulator: `simulator="grounded"` (the default), or
    an LM simulator handed over (`envs.dialogue.build_simulator`).

    `options={"object": name}` pins the hidden object by name or synonym; the per-item
    evaluation plays every name of `objects.OBJECTS` once, in that order.
    """

    task = "twenty-questions"
    option_names = ("object",)

    def __init__(self, *, simulator="grounded", max_questions: int = 20, render_mode: str | None = None):
        super().__init__(max_agent_turns=max_questions, render_mode=render_mode)
        self.table = load_table()
        self.simulator = build_simulator(self.task, simulator, {"grounded": lambda: GroundedOracle(self.table)})
        self.hidden_object = None

    def _reset(self, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if "object" in options:
            obj = self.table.find(str(options["object"]))
            if obj is None:
                raise ValueError(
                    f"{self.task}: unknown object {options['object']!r}; valid objects: "
                    + ", ".join(o.name for o in self.table.objects)
                )
        else:
            obj = self._rng_choice(self.table.objects)
        self.hidden_object = obj
        self.simulator.reset(obj, self.np_random)
        return FIRST_OBSERVATION, {}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        answer = self.simulator.reply([*self.transcript, Turn(AGENT, action)])
        # The table, not the simulator's reply, decides a win: no simulator can be talked into one.
        meaning = self.table.parse(action)
        solved = meaning == Meaning(GUESS, self.hidden_object.name)
        info: dict[str, Any] = {"invalid_action": meaning is None, "unresolved": self.simulator.unresolved}
        if solved:
            answer, info["success"] = YES, True
        if solved or self.agent_turns + 1 >= self.max_agent_turns:
            info["object"] = self.hidden_object.name
        return answer, 0.0 if solved else -1.0, solved, info
