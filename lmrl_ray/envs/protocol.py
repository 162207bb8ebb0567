"""The evaluation protocol: which episodes a policy is evaluated on, and how they score.

    seeds, options = evaluation_options("maze", 800)       # the paper's 32 from each start
    figures = scores("maze", summary)                        # + normalised, paper's and ours

Evaluation seeds come from the "eval" stream (`play.episode_seed`), which training data
never draws, and the options follow the paper's protocol where it has one.
"""

from __future__ import annotations

from lmrl_ray import envs
from lmrl_ray.envs.base import AGENT
from lmrl_ray.envs.play import episode_seed
from lmrl_ray.stats import Summary, normalised_score

# The paper's evaluation sizes where published (TASKS.md): 32 episodes from each of the
# 25 maze starts, 4,096 Wordle games, 1,000 chess games, the 645 endgame positions.
PAPER_EVAL_EPISODES = {"maze": 800, "maze-po": 800, "wordle": 4096, "chess": 1000, "endgames": 645}
# Tasks whose evaluation plays every item once, in the table's order (the original's
# protocol): the hidden object or city, and the reset option that pins it.
PER_ITEM_TASKS = {"twenty-questions": "object", "guess-city": "city"}
DEFAULT_EVAL_EPISODES = 100


def evaluation_items(task: str) -> tuple[str, ...]:
    """The items a per-item task evaluates on, in order: Twenty Questions' objects and
    Guess My City's cities, as their tables list them (the original's order)."""
    if task == "twenty-questions":
        from lmrl_ray.envs.twenty_questions.objects import load_table

        return tuple(obj.name for obj in load_table().objects)
    if task == "guess-city":
        from lmrl_ray.envs.guess_city.cities import table

        return tuple(city.name for city in table().cities)
    raise ValueError(f"{task!r} has no per-item evaluation; tasks that have: {', '.join(PER_ITEM_TASKS)}")


def default_evaluation_episodes(task: str) -> int:
    """`lmrl-ray eval`'s default size: every item once for the per-item tasks, else 100
    (the paper's sizes, `PAPER_EVAL_EPISODES`, are larger and ask for it)."""
    envs.spec(task)
    return len(evaluation_items(task)) if task in PER_ITEM_TASKS else DEFAULT_EVAL_EPISODES


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
    datagen's eval split plays them. Twenty Questions and Guess My City: every object or
    city once in the table's order (`evaluation_items`), cycled beyond; fewer episodes
    than items take items evenly spaced over the table, so a short evaluation still
    spans every category. Others: episodes drawn from the seed.
    """
    envs.spec(task)
    if n < 1:
        raise ValueError(f"need at least one episode, got {n}")
    seeds = [episode_seed(seed, "eval", i) for i in range(n)]
    if task in ("maze", "maze-po"):
        from lmrl_ray.envs.maze import STARTS

        return seeds, [{"start": STARTS[i % len(STARTS)]} for i in range(n)]
    if task in PER_ITEM_TASKS:
        items, key = evaluation_items(task), PER_ITEM_TASKS[task]
        picks = [i * len(items) // n for i in range(n)] if n < len(items) else [i % len(items) for i in range(n)]
        return seeds, [{key: items[j]} for j in picks]
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


# -- Each task's own metrics --------------------------------------------------------------

MOVE_ACCURACY_TASKS = ("maze", "maze-po")
CHESS_TASKS = ("chess", "endgames")


def move_probes(task: str) -> list[tuple[str, list[str], set[str]]]:
    """The maze's move-accuracy probes (the original's maze evaluations,
    `llm_rl_scripts/maze/env/maze_utils.py: compute_move_accuracy`): for every open cell
    but the goal, the policy's prompt at the start of an episode there, the four moves,
    and the moves that begin a shortest path to the goal (a tie lets several count)."""
    from lmrl_ray.envs.maze import ACTIONS, distances, move

    if task not in MOVE_ACCURACY_TASKS:
        raise ValueError(f"move accuracy is a metric of {', '.join(MOVE_ACCURACY_TASKS)}, not of {task!r}")
    dist = distances()
    env = envs.make(task)
    probes = []
    try:
        for start in sorted(dist):
            if dist[start] == 0:
                continue
            env.reset(seed=0, options={"start": start})
            best = {a for a in ACTIONS if dist.get(move(start, a), -1) == dist[start] - 1}
            probes.append((env.prompt(), list(ACTIONS), best))
    finally:
        env.close()
    return probes


def chess_outcome(row: dict) -> tuple[str, int, int]:
    """(outcome, agent turns, illegal moves) of a stored chess or endgame episode, read
    from its boards (every observation is the spaced FEN): "win" or "loss" by checkmate,
    "draw" (stalemate, the 75-move rule, fivefold repetition, insufficient material), or
    "unfinished" at the turn cap. An agent turn that left the board as it was is an
    illegal move (the game goes on)."""
    import chess

    from lmrl_ray.envs.chess_game import unspaced

    boards = [unspaced(t["text"]) for t in row["turns"] if t["role"] != AGENT]
    illegal = sum(before == after for before, after in zip(boards, boards[1:]))
    outcome = chess.Board(boards[-1]).outcome()  # as the environment ends a game
    if outcome is None and _repetitions(boards) >= 5:
        result = "draw"  # fivefold repetition, which one board alone cannot show
    elif outcome is None:
        result = "unfinished"
    elif outcome.winner is None:
        result = "draw"
    else:
        result = "win" if outcome.winner == chess.WHITE else "loss"
    return result, len(boards) - 1, illegal


def _repetitions(boards: list[str]) -> int:
    """How often the last board's position occurred in the game. The stored boards are
    the positions with White to move; a game that the agent's own move ended by
    repetition ends on a position with Black to move, which occurred between stored
    boards: after an earlier agent move that the opponent's reply turned into the next
    stored board."""
    import chess

    def key(fen: str) -> str:
        return fen.rsplit(" ", 2)[0]  # a FEN without its move counters

    last = key(boards[-1])
    if chess.Board(boards[-1]).turn == chess.WHITE:
        return sum(key(b) == last for b in boards)
    count = 1
    for before, after in zip(boards[:-2], boards[1:-1]):
        board = chess.Board(before)
        for move in board.legal_moves:
            board.push(move)
            if key(board.fen()) == last and any(_reaches(board, reply, key(after), key) for reply in board.legal_moves):
                count += 1
                board.pop()
                break
            board.pop()
    return count


def _reaches(board, reply, target: str, key) -> bool:
    board.push(reply)
    try:
        return key(board.fen()) == target
    finally:
        board.pop()


def episode_metrics(task: str, rows: list[dict]) -> dict[str, float]:
    """A task's own metrics over evaluation episodes, beside the returns: for chess and
    endgames the win, draw and loss rates, the share of illegal agent moves and the
    mean game length in agent turns (the original's chess evaluations); none elsewhere."""
    if task not in CHESS_TASKS or not rows:
        return {}
    outcomes = [chess_outcome(r) for r in rows]
    n, turns = len(outcomes), sum(t for _, t, _ in outcomes)
    return {
        "win_rate": sum(o == "win" for o, _, _ in outcomes) / n,
        "draw_rate": sum(o == "draw" for o, _, _ in outcomes) / n,
        "loss_rate": sum(o == "loss" for o, _, _ in outcomes) / n,
        "illegal_move_rate": sum(i for _, _, i in outcomes) / max(turns, 1),
        "mean_game_turns": turns / n,
    }
