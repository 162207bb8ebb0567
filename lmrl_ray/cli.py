"""`lmrl-ray`: the command line over the tasks (and, as they land, the training drivers)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict

from lmrl_ray import envs
from lmrl_ray.data.store import StoreError
from lmrl_ray.rollout import evaluate, normalised_score


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def cmd_tasks(args: argparse.Namespace) -> int:
    width = max(map(len, envs.names()))
    for name in envs.names():
        print(f"{name:<{width}}  {envs.spec(name).summary}")
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    """A person plays a task in the terminal (the paper's human evaluation)."""
    env = envs.make(args.task)
    try:
        obs, _ = env.reset(seed=args.seed)
        print(f"{args.task}: type your move; ':legal' lists the legal actions, ':quit' ends.\n")
        print(obs)
        while not env.done:
            try:
                action = input("> ")
            except EOFError:
                print()
                break
            if action.strip() == ":quit":
                break
            if action.strip() == ":legal":
                legal = env.legal_actions()
                print(", ".join(legal) if legal else "(any text: this task's actions are free-form)")
                continue
            obs, reward, terminated, truncated, info = env.step(action)
            note = " (invalid)" if info.get("invalid_action") else ""
            print(f"{obs}\n  reward {reward:+g}{note}")
        if env.done:
            outcome = "success" if info.get("success") else "no success"
            print(f"\nEpisode over after {env.agent_turns} turns: return {env.episode_return:g}, {outcome}.")
    finally:
        env.close()
    return 0


def _summary_row(task: str, kind: str, episodes: int, seed: int, progress: bool) -> dict:
    s = evaluate(task, kind, episodes, seed=seed, progress=progress)
    spec = envs.spec(task)
    return {
        "task": task,
        "policy": kind,
        **asdict(s),
        "normalised_paper": normalised_score(s.mean_return, spec.paper_min, spec.paper_avg, spec.paper_max),
    }


def cmd_rollout(args: argparse.Namespace) -> int:
    row = _summary_row(args.task, args.policy, args.episodes, args.seed, progress=not args.json)
    if args.json:
        print(json.dumps(row))
        return 0
    print(
        f"{args.task} / {args.policy}: mean return {row['mean_return']:.3f} ± {_fmt(row['ci95'], 3)} (95% CI) "
        f"over {row['episodes']} episodes; success rate {row['success_rate']:.3f}; "
        f"mean turns {row['mean_turns']:.1f}; normalised score (paper constants) {_fmt(row['normalised_paper'], 1)}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Every task played by its scripted policies: the summary table."""
    from tqdm import tqdm

    cells = [(t, k) for t in envs.names() for k in envs.POLICY_KINDS]
    rows = []
    for task, kind in tqdm(cells, desc="demo", unit="cell"):
        rows.append(_summary_row(task, kind, args.episodes, args.seed, progress=False))
    if args.json:
        print(json.dumps(rows))
        return 0
    header = f"{'task':<17} {'policy':<10} {'return':>9} {'± 95% CI':>9} {'success':>8} {'turns':>6} {'norm.':>6}"
    print(f"\nScripted policies, {args.episodes} episodes per cell (seed {args.seed}).")
    print("norm. = the paper's normalised score (appendix E constants; '-' where unpublished).\n")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['task']:<17} {r['policy']:<10} {r['mean_return']:>9.2f} {_fmt(r['ci95']):>9} "
            f"{r['success_rate']:>8.2f} {r['mean_turns']:>6.1f} {_fmt(r['normalised_paper'], 1):>6}"
        )
    return 0


def cmd_endgames_eval_set(args: argparse.Namespace) -> int:
    """Regenerate the endgame evaluation positions (Stockfish needs >= 15 moves to mate)."""
    from lmrl_ray.envs.endgames import EVAL_SET_PATH, build_eval_set

    out = args.out or EVAL_SET_PATH
    kept = build_eval_set(args.n, seed=args.seed, depth=args.depth, path=out, progress=True)
    print(f"wrote {len(kept)} positions to {out}")
    return 0


def cmd_datagen(args: argparse.Namespace) -> int:
    """Generate an offline dataset into a replay store (resumable, identical for a seed)."""
    from lmrl_ray.data.datagen import DEFAULT_EPISODES, PAPER_TABLE_1, generate

    if args.episodes is None:
        episodes = DEFAULT_EPISODES[args.task]
    elif args.episodes == "paper":
        episodes = PAPER_TABLE_1[args.task][0]
    else:
        try:
            episodes = int(args.episodes)
        except ValueError:
            print(f"lmrl-ray: --episodes takes a number or 'paper', not {args.episodes!r}", file=sys.stderr)
            return 2
    report = generate(
        args.task,
        episodes,
        args.out,
        seed=args.seed,
        workers=args.workers,
        policy=args.policy,
        split=args.split,
        episodes_per_shard=args.episodes_per_shard,
        progress=True,
    )
    skipped = f" ({report.shards_skipped} already there)" if report.shards_skipped else ""
    print(f"{report.episodes} {args.task} episodes in {report.shards} shards{skipped} at {report.out}, {report.seconds:.1f} s")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    """Table 1's columns for a dataset, beside the paper's row."""
    from lmrl_ray.data.stats import dataset_stats, paper_row
    from lmrl_ray.data.store import ReplayStore

    rows = dataset_stats(ReplayStore(args.dir))
    if args.json:
        print(json.dumps([{**asdict(r), "paper": paper_row(r.task)} for r in rows]))
        return 0
    header = f"{'task':<17} {'':<6} {'trajectories':>12} {'turns':>14} {'success':>8} {'return':>18}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.task:<17} {'ours':<6} {r.trajectories:>12} {r.mean_turns:>7.2f} ± {r.std_turns:<4.1f} "
            f"{r.success_rate:>8.3f} {r.mean_return:>9.3f} ± {r.std_return:<6.2f}"
        )
        p = paper_row(r.task)
        if p:
            print(
                f"{'':<17} {'paper':<6} {p['trajectories']:>12} {p['mean_turns']:>7.2f}{'':7} "
                f"{p['success_rate']:>8.3f} {p['mean_return']:>9.3f}"
            )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmrl-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tasks", help="list the tasks")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("play", help="play a task in the terminal")
    p.add_argument("task", choices=envs.names(), metavar="TASK")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_play)

    p = sub.add_parser("rollout", help="play a scripted policy; mean return with a 95%% CI")
    p.add_argument("task", choices=envs.names(), metavar="TASK")
    p.add_argument("--policy", choices=envs.POLICY_KINDS, default="expert")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object instead of a sentence")
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser("demo", help="scripted policies on every task: the summary table")
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "endgames-eval-set",
        help="regenerate the endgame evaluation positions (about 15 minutes for the shipped 645)",
    )
    p.add_argument("--n", type=int, default=645, help="positions to keep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depth", type=int, default=20, help="Stockfish search depth in plies")
    p.add_argument("--out", default=None, help="file to write (default: the shipped data file)")
    p.set_defaults(func=cmd_endgames_eval_set)

    p = sub.add_parser("datagen", help="generate an offline dataset into a replay store")
    p.add_argument("task", choices=envs.names(), metavar="TASK")
    p.add_argument("--episodes", default=None, help="a number, or 'paper' for Table 1's size (default: the task's local size)")
    p.add_argument("--out", required=True, help="the store directory (created, or resumed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="Ray tasks in flight; 0 runs in-process")
    p.add_argument("--policy", choices=envs.POLICY_KINDS, default="behaviour")
    p.add_argument("--split", choices=["train", "eval"], default="train")
    p.add_argument("--episodes-per-shard", type=int, default=None, help="default: 500 (chess 20, endgames 100)")
    p.set_defaults(func=cmd_datagen)

    p = sub.add_parser("data", help="inspect datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("stats", help="Table 1's columns for a dataset, beside the paper's")
    q.add_argument("dir")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_data_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if isinstance(getattr(args, "episodes", None), int) and args.episodes < 1:
        print("lmrl-ray: --episodes must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (ValueError, OSError, StoreError) as err:
        # Bad input (a missing store, a malformed dataset, an unknown option): the message
        # names what and where; a traceback would only hide it.
        print(f"lmrl-ray: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
