"""The benchmark table's statistics (by hand) and its files (read back)."""

from __future__ import annotations

import csv
import math

import pytest

from lmrl_ray.drivers.report import mean_ci, summarise, write_report

# 2 tasks x 2 algorithms x 2 seeds, plus a third seed for one cell.
CELLS = [
    {"task": "maze", "algo": "bc", "seed": 0, "mean_return": -80.0, "success_rate": 0.3,
     "normalised_paper": 40.0, "normalised_ours": 45.0, "move_accuracy": 0.5},
    {"task": "maze", "algo": "bc", "seed": 1, "mean_return": -70.0, "success_rate": 0.5,
     "normalised_paper": 50.0, "normalised_ours": 55.0, "move_accuracy": 0.7},
    {"task": "maze", "algo": "ilql", "seed": 0, "mean_return": -20.0, "success_rate": 0.9,
     "normalised_paper": 90.0, "normalised_ours": 95.0},
    {"task": "maze", "algo": "ilql", "seed": 1, "mean_return": -30.0, "success_rate": 0.8,
     "normalised_paper": 80.0, "normalised_ours": 85.0},
    {"task": "maze", "algo": "ilql", "seed": 2, "mean_return": -25.0, "success_rate": 0.7,
     "normalised_paper": 85.0, "normalised_ours": 90.0},
    {"task": "car-dealer", "algo": "bc", "seed": 0, "mean_return": 0.4, "success_rate": 0.5,
     "normalised_paper": None, "normalised_ours": 50.0},
    {"task": "car-dealer", "algo": "bc", "seed": 1, "mean_return": 0.6, "success_rate": 0.6,
     "normalised_paper": None, "normalised_ours": 60.0},
    {"task": "car-dealer", "algo": "ilql", "seed": 0, "mean_return": 0.7, "success_rate": 0.7,
     "normalised_paper": None, "normalised_ours": 70.0},
]


def test_mean_ci_uses_students_t_by_hand():
    # Two values: s = |a - b| / sqrt(2), t(1) = 12.706, half-width = t * s / sqrt(2) = 12.706 * |a - b| / 2.
    mean, ci = mean_ci([-80.0, -70.0])
    assert mean == -75.0
    assert ci == pytest.approx(12.7062 * 10.0 / 2, rel=1e-4)
    # Three values -20, -30, -25: s = 5, t(2) = 4.303.
    mean, ci = mean_ci([-20.0, -30.0, -25.0])
    assert mean == -25.0
    assert ci == pytest.approx(4.3027 * 5.0 / math.sqrt(3), rel=1e-4)
    mean, ci = mean_ci([3.0])
    assert mean == 3.0 and math.isnan(ci)
    with pytest.raises(ValueError):
        mean_ci([])


def test_summarise_groups_by_task_and_algorithm():
    rows = {(r["task"], r["algo"]): r for r in summarise(CELLS)}
    assert list(rows) == [("maze", "bc"), ("maze", "ilql"), ("car-dealer", "bc"), ("car-dealer", "ilql")]
    ilql = rows["maze", "ilql"]
    assert ilql["seeds"] == 3
    assert ilql["normalised_paper"] == pytest.approx(85.0)
    assert ilql["normalised_paper_ci95"] == pytest.approx(4.3027 * 5.0 / math.sqrt(3), rel=1e-4)
    assert rows["maze", "bc"]["success_rate_ci95"] == pytest.approx(12.7062 * 0.2 / 2, rel=1e-4)
    # The paper publishes no Car Dealer constants: that measure is missing, the others are not.
    assert rows["car-dealer", "bc"]["normalised_paper"] is None
    assert rows["car-dealer", "bc"]["normalised_ours"] == pytest.approx(55.0)
    assert math.isnan(rows["car-dealer", "ilql"]["mean_return_ci95"])  # one seed: no interval


def test_summarise_rejects_bad_cells():
    with pytest.raises(ValueError, match="cell 0 lacks"):
        summarise([{"task": "maze", "algo": "bc", "seed": 0}])
    with pytest.raises(ValueError, match="repeat a seed"):
        summarise([CELLS[0], CELLS[0]])


def test_write_report_writes_the_table_csv_and_plot(tmp_path):
    rows = write_report(CELLS, tmp_path / "report")
    out = tmp_path / "report"
    with open(out / "cells.csv") as handle:
        cells = list(csv.DictReader(handle))
    assert len(cells) == len(CELLS)
    assert cells[5]["normalised_paper"] == "" and float(cells[5]["normalised_ours"]) == 50.0
    with open(out / "table.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [(r["task"], r["algo"], int(r["seeds"])) for r in table] == [
        (r["task"], r["algo"], r["seeds"]) for r in rows
    ]
    assert float(table[1]["mean_return_ci95"]) == pytest.approx(4.3027 * 5.0 / math.sqrt(3), rel=1e-4)
    md = (out / "table.md").read_text()
    assert "| maze | bc | 2 | -75.00 ± 63.53 |" in md
    assert "| car-dealer | ilql | 1 | 0.70 |" in md  # one seed: no interval printed
    assert md.count("move acc. 0.60 ± 1.27 |") == 1 and md.endswith("| - |\n")  # the maze's own metric
    png = (out / "table.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(out / "table.png").shape[:2]
    assert height >= 200 and width >= 300
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind
