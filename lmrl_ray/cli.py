"""`lmrl-ray`: the command line over the tasks, the datasets, the drivers and the simulators."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict

from lmrl_ray import envs
from lmrl_ray.data.store import StoreError
from lmrl_ray.envs.play import scripted_summary
from lmrl_ray.learners.config import ALGOS
from lmrl_ray.simulators.lm import SECRETS
from lmrl_ray.stats import normalised_score


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
    s = scripted_summary(task, kind, episodes, seed=seed, progress=progress)
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


def cmd_scripted(args: argparse.Namespace) -> int:
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


def _simulator_settings(args: argparse.Namespace) -> dict:
    settings = {"simulator": args.simulator} if args.simulator else {}
    if args.simulator_model:
        settings["simulator_model"] = args.simulator_model
    return settings


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint: mean return with a 95% CI and the normalised scores."""
    from lmrl_ray.learners.checkpoint import read_meta, resolve_checkpoint

    read_meta(resolve_checkpoint(args.checkpoint))  # a wrong path fails now, before torch loads
    from lmrl_ray.drivers.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint,
        task=args.task,
        episodes=args.episodes,
        seed=args.seed,
        engine=args.engine,
        device=args.device,
        decoding=args.decoding,
        temperature=args.temperature,
        top_p=args.top_p,
        beta=args.beta,
        max_new_tokens=args.max_new_tokens,
        num_workers=args.num_workers,
        envs_per_worker=args.envs_per_worker,
        env_settings=_simulator_settings(args),
        simulator_replicas=args.simulator_replicas,
        out=args.out,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    how = result["decoding"]
    if result["temperature"] is not None:
        how += f", temperature {result['temperature']:g}"
    if result["value_guided"]:
        how += f", value-guided beta {result['beta']:g}"
    print(
        f"{result['task']} / {result['algo']} step {result['step']} ({how}): mean return {result['mean_return']:.3f} "
        f"± {_fmt(result['ci95'], 3)} (95% CI) over {result['episodes']} episodes; "
        f"success rate {result['success_rate']:.3f}; mean turns {result['mean_turns']:.1f}; "
        f"normalised score {_fmt(result['normalised_paper'], 1)} (paper constants), "
        f"{_fmt(result['normalised_ours'], 1)} (ours)"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Training: offline (BC, filtered BC, MC Returns, ILQL on a dataset) or online (PPO,
    online filtered BC from an initial checkpoint)."""
    from lmrl_ray.learners.config import config_class, load_config, print_help

    if args.help or args.help_verbose:
        args.parser.print_help()
        if args.algo:
            print(f"\nThe config keys of {args.algo} (key=value, or --key value; a YAML file of them with --config)"
                  + ("" if args.help_verbose else "; -H for their documentation") + ":")
            print_help(args.algo, f"lmrl-ray train {args.task or 'TASK'} --algo {args.algo}", verbose=args.help_verbose)
        return 0
    if args.task is None or args.algo is None:
        args.parser.error("train needs a TASK and --algo (lmrl-ray train --help)")
    from lmrl_ray.cluster import init_ray
    from lmrl_ray.learners.group import dataset_task

    online = config_class(args.algo).online
    if not online and args.data is None:
        raise ValueError(f"--algo {args.algo} trains on a dataset: pass --data DIR")
    if not online and args.init is not None:
        raise ValueError("--init is for the online algorithms (ppo, online-filtered-bc); offline ones take --model")
    if args.init is not None and args.model is not None:
        raise ValueError("pass --init (online) or --model, not both")
    if args.data is not None:
        found = dataset_task(args.data)
        if found != args.task:
            raise ValueError(f"{args.data}: a dataset of task {found}, not {args.task}")
    config = load_config(args.algo, file=args.config, overrides=args.overrides, arguments=args.arguments,
                         task=args.task, model=args.init or args.model)
    workers = config.rollouts.num_rollout_workers + config.rollouts.num_engines if online else 0
    if config.resources.num_learners > 0 or workers > 0:
        init_ray()
    out = args.out or f"runs/{args.task}-{args.algo}"
    if online:
        from lmrl_ray.drivers.online import train_online

        result = train_online(config, out=out, data=args.data, resume=args.resume, progress=not args.json)
        result.pop("history")
        if args.json:
            print(json.dumps(result))
            return 0
        m = result["metrics"]
        print(f"{args.task} / {args.algo}: {result['iterations']} iterations; checkpoint {result['checkpoint']}")
        print(f"last iteration: rollout mean return {m.get('rollout/return_mean', float('nan')):.3f}, "
              f"success rate {m.get('rollout/success_rate', float('nan')):.3f}")
        if "eval/return_mean" in m:
            print(f"evaluation (sampled): mean return {m['eval/return_mean']:.3f} ± {_fmt(m['eval/return_ci95'], 3)} "
                  f"(95% CI) over {config.common.eval_episodes} episodes; success rate {m['eval/success_rate']:.3f}")
        return 0
    from lmrl_ray.drivers.offline import train_offline

    result = train_offline(config, data=args.data, out=out, resume=args.resume, progress=not args.json)
    c = config.common
    if c.eval_episodes:
        from lmrl_ray.drivers.evaluation import evaluate_checkpoint

        result["evaluation"] = evaluate_checkpoint(result["checkpoint"], episodes=c.eval_episodes, seed=c.seed,
                                                   env_settings=c.env_settings, simulator_replicas=c.simulator_replicas)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.task} / {args.algo}: {result['updates']} updates; checkpoint {result['checkpoint']}")
    if "evaluation" in result:
        e = result["evaluation"]
        print(f"evaluation: mean return {e['mean_return']:.3f} ± {_fmt(e['ci95'], 3)} (95% CI) over {e['episodes']} "
              f"episodes; success rate {e['success_rate']:.3f}; normalised {_fmt(e['normalised_paper'], 1)} (paper), "
              f"{_fmt(e['normalised_ours'], 1)} (ours)")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Every (task, algorithm, seed) cell as a Ray task; the table with 95% intervals."""
    from lmrl_ray.drivers.benchmark import run_benchmark
    from lmrl_ray.drivers.report import markdown

    result = run_benchmark(
        args.tasks.split(","), args.algos.split(","), args.seeds, out=args.out, preset=args.preset, model=args.model,
        workers=args.workers, overrides=args.overrides, data_episodes=args.data_episodes,
        eval_episodes=args.eval_episodes, gpus_per_cell=args.gpus_per_cell, progress=not args.json,
    )
    if args.json:
        print(json.dumps({k: result[k] for k in ("rows", "seconds", "workers")}))
        return 0
    print(markdown(result["rows"]))
    print(f"\n{len(result['cells'])} cells in {result['seconds']:.0f} s; report in {args.out}")
    return 0


def cmd_simulator_train(args: argparse.Namespace) -> int:
    """Train an LM simulator on a dataset of its task's grounded dialogues."""
    from lmrl_ray.simulators.distill import train_simulator

    result = train_simulator(args.task, args.data, args.out, model=args.model, overrides=args.overrides,
                             progress=not args.json)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.task} simulator: {result['updates']} updates, last loss {result['loss']:.4f}; "
          f"{result['folder']} (weights sha256 {result['hash'][:16]})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit an LM simulator against the grounded one; a markdown report."""
    from lmrl_ray.drivers.audit import audit, markdown, write_markdown

    report = audit(args.task, args.simulator, heldout_episodes=args.heldout, checkpoints=args.checkpoints,
                   episodes=args.episodes, seed=args.seed, threshold=args.threshold)
    if args.out:
        write_markdown(report, args.out)
    print(json.dumps(report) if args.json else markdown(report))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: Maze data, BC and ILQL on the embedded model, both evaluated."""
    from lmrl_ray.drivers.demo import format_table, run_demo

    rows = run_demo(args.out, seed=args.seed, eval_episodes=args.episodes)
    print(json.dumps(rows) if args.json else format_table(rows))
    return 0


def _add_task_commands(sub) -> None:
    """The commands of tasks, play and scripted policies."""
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

    p = sub.add_parser("scripted", help="scripted policies on every task: the summary table")
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scripted)

    p = sub.add_parser(
        "endgames-eval-set",
        help="regenerate the endgame evaluation positions (about 15 minutes for the shipped 645)",
    )
    p.add_argument("--n", type=int, default=645, help="positions to keep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depth", type=int, default=20, help="Stockfish search depth in plies")
    p.add_argument("--out", default=None, help="file to write (default: the shipped data file)")
    p.set_defaults(func=cmd_endgames_eval_set)


def _add_data_commands(sub) -> None:
    """The commands of offline datasets."""
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


def _add_training_commands(sub) -> None:
    """The commands of training: train, the main job, the benchmark."""
    p = sub.add_parser(
        "train", add_help=False, allow_abbrev=False, usage="lmrl-ray train TASK --algo ALGO [options] [key=value ...] [--key value ...]",
        help="RL: offline (bc, filtered-bc, mc, ilql) or online (ppo, online-filtered-bc)",
        description="Train an algorithm on a task. Its config keys follow the command, as key=value or "
                    "--key value (over --config FILE's); `lmrl-ray train TASK --algo ALGO --help` lists them.",
    )
    p.add_argument("task", nargs="?", choices=envs.names(), metavar="TASK")
    p.add_argument("--algo", choices=list(ALGOS), help=f"one of {', '.join(ALGOS)}")
    p.add_argument("--data", default=None, help="the dataset (a replay store folder from `lmrl-ray datagen`); "
                   "offline: required; ppo: for its optional BC term (offline_bc_weight)")
    p.add_argument("--model", default=None, help="'tiny' (default) or a local Hugging Face folder, e.g. a BC checkpoint")
    p.add_argument("--init", default=None, help="online: the checkpoint to start from (the paper starts from BC)")
    p.add_argument("--out", default=None, help="the run folder (default runs/TASK-ALGO)")
    p.add_argument("--config", default=None, help="a YAML file of config keys")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's newest checkpoint")
    p.add_argument("--json", action="store_true")
    p.add_argument("-h", "--help", action="store_true", help="this help; with --algo, the algorithm's config keys too")
    p.add_argument("-H", "--help-verbose", action="store_true", help="with --algo: its config keys, documented")
    p.set_defaults(func=cmd_train, parser=p, overrides=[], takes_arguments=True)

    p = sub.add_parser("demo", help="the main job: Maze data, BC and ILQL on the tiny model, evaluated side by side")
    p.add_argument("--out", default="runs/demo", help="data, checkpoints and results go here (resumed if present)")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy (4 per start)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("benchmark", help="the table: every (task, algo, seed) cell as a Ray task, 95%% intervals",
                       usage="lmrl-ray benchmark --tasks T1,T2 --algos A1,A2 [options] [key=value ...]",
                       epilog="key=value: config keys for every training run that has them")
    p.add_argument("--tasks", required=True, help="comma-separated, e.g. maze,wordle")
    p.add_argument("--algos", required=True,
                   help="comma-separated, e.g. bc,filtered-bc,mc,ilql,ppo; symbolic-dqn|cql|bc|marwil: the "
                        "symbolic Maze baseline (RLlib), rows of task maze")
    p.add_argument("--seeds", type=int, default=3, help="seeds per (task, algo)")
    p.add_argument("--preset", choices=["local", "paper"], default="local",
                   help="local: small data, short runs, the tiny model; paper: Table 1's data sizes, needs --model")
    p.add_argument("--model", default=None, help="the starting model (default: the preset's; 'paper' needs a folder)")
    p.add_argument("--out", default="runs/benchmark", help="data, runs, cells/*.json and the report (resumed)")
    p.add_argument("--workers", type=int, default=None, help="cells at a time (default: as the cluster's CPUs allow)")
    p.add_argument("--data-episodes", type=int, default=None, help="override the preset's dataset size")
    p.add_argument("--eval-episodes", type=int, default=None, help="override the preset's evaluation episodes")
    p.add_argument("--gpus-per-cell", type=float, default=0.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_benchmark, overrides=[])


def _add_evaluation_commands(sub) -> None:
    """The commands of evaluation and the LM simulators."""
    lm_tasks = list(SECRETS)  # the tasks with an LM simulator
    p = sub.add_parser("eval", help="evaluate a checkpoint: mean return with a 95%% CI, normalised scores")
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint folder, or a run folder (its latest checkpoint)")
    p.add_argument("--task", choices=envs.names(), metavar="TASK", default=None,
                   help="default: the checkpoint's task (another task is allowed, with a warning)")
    p.add_argument("--episodes", type=int, default=None,
                   help="default: every object or city once (twenty-questions 158, guess-city 100), else 100; "
                        "the paper's: 800 for maze (32 per start), 645 endgames, 4096 wordle, 1000 chess")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", choices=["auto", "hf", "vllm"], default="auto")
    p.add_argument("--device", default=None, help="the HF engine's device (default: CUDA when visible, else CPU)")
    p.add_argument("--decoding", choices=["sample", "rerank"], default="sample",
                   help="sample utterances, or re-rank the task's legal actions by likelihood")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--beta", type=float, default=None, help="value-guidance strength (default: the checkpoint's)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="per agent turn (default: the task's)")
    p.add_argument("--num-workers", type=int, default=0, help="rollout workers as Ray actors; 0 runs in-process")
    p.add_argument("--envs-per-worker", type=int, default=16, help="episodes each worker plays at once")
    p.add_argument("--simulator", choices=["grounded", "lm"], default=None,
                   help="dialogue tasks: the partner (default: grounded)")
    p.add_argument("--simulator-model", default=None, help="--simulator lm: the trained LM simulator's folder")
    p.add_argument("--simulator-replicas", type=int, default=0,
                   help="--simulator lm: engine actors serving the simulator (0: loaded in each rollout process)")
    p.add_argument("--out", default=None, help="also write the episodes to a replay store there")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a sentence")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("simulator", help="LM simulators for the dialogue tasks")
    sim_sub = p.add_subparsers(dest="simulator_command", required=True)
    q = sim_sub.add_parser("train", help="train an LM simulator on a dataset of grounded dialogues",
                           usage="lmrl-ray simulator train TASK --data DIR --out DIR [options] [key=value ...]",
                           epilog="key=value: BC config keys, e.g. updates=500")
    q.add_argument("task", choices=lm_tasks, metavar="TASK")
    q.add_argument("--data", required=True, help="a replay store of the task's episodes (`lmrl-ray datagen`)")
    q.add_argument("--out", required=True, help="the simulator's model folder (written atomically)")
    q.add_argument("--model", default="tiny", help="the model to start from: 'tiny' or a local Hugging Face folder")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_simulator_train, overrides=[])

    p = sub.add_parser("audit", help="audit an LM simulator: agreement, adversarial probes, reward hacking")
    p.add_argument("task", choices=lm_tasks, metavar="TASK")
    p.add_argument("--simulator", required=True, help="the LM simulator's folder (`lmrl-ray simulator train`)")
    p.add_argument("--checkpoints", nargs="*", default=[], help="policies to play under both simulators")
    p.add_argument("--heldout", type=int, default=50, help="held-out behaviour dialogues (the eval stream)")
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes per checkpoint and simulator")
    p.add_argument("--threshold", type=float, default=0.9, help="agreement below this is flagged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the markdown report there")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmrl-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_task_commands, _add_data_commands, _add_training_commands, _add_evaluation_commands):
        add(sub)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, in two stages: argparse reads each command's own options; what it
    leaves are config keys (of train, benchmark and simulator train: the commands with
    `overrides`), as key=value anywhere after the command, and for train also as
    --key value (`arguments`), which the algorithm's config reads (tyro,
    `learners.config.load_config`)."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides = [r for r in rest if "=" in r and not r.startswith("-")]
    args.arguments = [r for r in rest if r not in getattr(args, "overrides", [])]
    if args.arguments and not getattr(args, "takes_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(args.arguments)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
