"""The evaluation protocol: which episodes a policy is evaluated on, and how they score.

    seeds, options = evaluation_options("maze", 800)       # the paper's 32 from each start
    figures = scores("maze", summary)                        # + normalised, paper's and ours

Evaluation seeds come from the "eval" stream (`play.episode_seed`), which training data
never draws, and the options follow the paper's protocol where it has one.
"""

from __future__ import annotations

from lmrl_ray import envs
from lmrl_ray.envs.play import episode_seed
from lmrl_ray.stats import Summary, normalised_score

# The paper's evaluation sizes where published (TASKS.md): 32 episodes from each of the
# 25 maze starts, 4,096 Wordle games, 1,000 chess games, the 645 endgame positions.
PAPER_EVAL_EPISODES = {"maze": 800, "maze-po": 800, "wordle": 4096, "chess": 1000, "endgames": 645}


def episode_options(task: str, split: str, index: int) -> dict | None:
    """Options that pin episode `index` of a split: the endgame evaluation split plays the
    fixed positions in order (cycled); every other episode is drawn from its seed."""
    if task == "endgames" and split == "eval":
        from lmrl_ray.envs.endgames import eval_positions

        return {"eval_index": index % len(eval_positions())}
    return None


def evaluation_options(task: str, n: int, seed: int = 0) -> tuple[list[int], list[dict | None]]:
    """Seeds and options of `n` evaluation episodes of `task`.

    Maze (both): the 25 starts in turn, so 800 episodes are the paper's 32 from each
    start. Endgames: the 645 fixed evaluation positions in order (cycled beyond 645), as
    datagen's eval split plays them. Others: episodes drawn from the seed.
    """
    envs.spec(task)
    if n < 1:
        raise ValueError(f"need at least one episode, got {n}")
    seeds = [episode_seed(seed, "eval", i) for i in range(n)]
    if task in ("maze", "maze-po"):
        from lmrl_ray.envs.maze import STARTS

        return seeds, [{"start": STARTS[i % len(STARTS)]} for i in range(n)]
    return seeds, [episode_options(task, "eval", i) for i in range(n)]


def scores(task: str, summary: Summary) -> dict:
    """An evaluation's figures: the summary's fields and the normalised scores of `task`
    with the paper's constants and with ours."""
    spec = envs.spec(task)
    return {
        "episodes": summary.episodes,
        "mean_return": summary.mean_return,
        "ci95": summary.ci95,
        "std_return": summary.std_return,
        "success_rate": summary.success_rate,
        "mean_turns": summary.mean_turns,
        "normalised_paper": normalised_score(summary.mean_return, spec.paper_min, spec.paper_avg, spec.paper_max),
        "normalised_ours": normalised_score(summary.mean_return, spec.paper_min, spec.our_avg, spec.our_max),
    }
