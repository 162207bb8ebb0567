"""The benchmark table: cells of (task, algorithm, seed) summarised over seeds.

A *cell* is one training run's evaluation, a dict with at least `task`, `algo`, `seed`
and `mean_return`, and where known `success_rate`, `normalised_paper`,
`normalised_ours` and the task's own metrics (what `evaluation.evaluate_checkpoint`
returns, plus the seed). Every
(task, algorithm) row of the table is the mean over its seeds with a 95% confidence
interval (Student's t, n - 1 degrees of freedom; none from a single seed), of the raw
return and of both normalised scores. A normalised score is piecewise linear and clipped,
so each seed is normalised first and the scores averaged, not the other way round.

`write_report` writes `cells.csv` (one line per seed), `table.csv` and `table.md` (one
line per task and algorithm) and `table.png` (normalised scores with their intervals).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from lmrl_ray.io import write_atomically
from lmrl_ray.stats import mean_ci

# The tasks' own metrics (`envs.protocol`): maze move accuracy; chess and endgame outcomes.
TASK_MEASURES = ("move_accuracy", "win_rate", "draw_rate", "loss_rate", "illegal_move_rate")
MEASURES = ("mean_return", "success_rate", "normalised_paper", "normalised_ours", *TASK_MEASURES)
CELL_FIELDS = ("task", "algo", "seed", *MEASURES)
_SHORT = {"move_accuracy": "move acc.", "win_rate": "won", "draw_rate": "drawn", "loss_rate": "lost",
          "illegal_move_rate": "illegal moves"}
REQUIRED = ("task", "algo", "seed", "mean_return")


def summarise(cells: Iterable[dict]) -> list[dict]:
    """One row per (task, algo), in the order first seen: `seeds` (how many), and for each
    measure `<measure>` (mean over seeds) and `<measure>_ci95`; a measure missing (None)
    from any seed of a row is None in that row."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for i, cell in enumerate(cells):
        missing = [k for k in REQUIRED if cell.get(k) is None]
        if missing:
            raise ValueError(f"benchmark cell {i} lacks {missing}: {cell}")
        groups.setdefault((cell["task"], cell["algo"]), []).append(cell)
    rows = []
    for (task, algo), group in groups.items():
        seeds = [c["seed"] for c in group]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"benchmark cells for {task}/{algo} repeat a seed: {sorted(seeds)}")
        row: dict = {"task": task, "algo": algo, "seeds": len(group)}
        for measure in MEASURES:
            values = [c.get(measure) for c in group]
            if any(v is None for v in values):
                row[measure] = row[f"{measure}_ci95"] = None
            else:
                row[measure], row[f"{measure}_ci95"] = mean_ci(values)
        rows.append(row)
    return rows


def _fmt(value, ci=None, digits: int = 2) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    if ci is not None and not math.isnan(ci):
        text += f" ± {ci:.{digits}f}"
    return text


def markdown(rows: Sequence[dict]) -> str:
    """The summary as a markdown table: mean ± 95% half-width over seeds, and each task's
    own metrics where it has them."""
    lines = [
        "| task | algorithm | seeds | return | success | normalised (paper) | normalised (ours) | task metrics |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        own = "; ".join(f"{_SHORT[m]} {_fmt(r[m], r[f'{m}_ci95'])}" for m in TASK_MEASURES if r.get(m) is not None)
        lines.append(
            f"| {r['task']} | {r['algo']} | {r['seeds']} | {_fmt(r['mean_return'], r['mean_return_ci95'])} "
            f"| {_fmt(r['success_rate'], r['success_rate_ci95'])} "
            f"| {_fmt(r['normalised_paper'], r['normalised_paper_ci95'], 1)} "
            f"| {_fmt(r['normalised_ours'], r['normalised_ours_ci95'], 1)} | {own or '-'} |"
        )
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: Sequence[dict], fields: Sequence[str]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})

    write_atomically(path, write)


def plot(rows: Sequence[dict], path: Path, measure: str = "normalised_ours") -> None:
    """Grouped bars of `measure` per task, one bar per algorithm, with 95% error bars
    (none where a row has a single seed); a row without the measure plots nothing."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    algos = list(dict.fromkeys(r["algo"] for r in rows))
    width = 0.8 / max(1, len(algos))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.8 * len(tasks) * len(algos)), 3.5))
    for j, algo in enumerate(algos):
        xs, ys, errs = [], [], []
        for i, task in enumerate(tasks):
            row = next((r for r in rows if r["task"] == task and r["algo"] == algo), None)
            if row is None or row.get(measure) is None:
                continue
            ci = row.get(f"{measure}_ci95")
            xs.append(i + (j - (len(algos) - 1) / 2) * width)
            ys.append(row[measure])
            errs.append(0.0 if ci is None or math.isnan(ci) else ci)
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=algo)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel(measure.replace("_", " "))
    ax.set_title("mean over seeds, 95% intervals")
    ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)


def write_report(cells: Sequence[dict], out: str | os.PathLike, *, plot_measure: str = "normalised_ours") -> list[dict]:
    """Summarise `cells` and write cells.csv, table.csv, table.md and table.png under
    `out` (each file written whole, then renamed into place); returns the summary rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(cells)
    _write_csv(out / "cells.csv", cells, CELL_FIELDS)
    summary_fields = ["task", "algo", "seeds"] + [f for m in MEASURES for f in (m, f"{m}_ci95")]
    _write_csv(out / "table.csv", rows, summary_fields)
    write_atomically(out / "table.md", lambda tmp: tmp.write_text(markdown(rows)))
    plot(rows, out / "table.png", plot_measure)
    return rows
