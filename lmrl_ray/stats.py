"""Intervals and normalised scores: the figures every result reports.

A mean comes with the half-width of its 95% confidence interval (Student's t, n - 1
degrees of freedom), and a return with the paper's normalised score (appendix E).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Student's t 0.975 quantiles for 1..30 degrees of freedom (standard tables).
_T975 = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
]


def t975(dof: int) -> float:
    """The two-sided 95% critical value of Student's t with `dof` degrees of freedom."""
    if dof < 1:
        return math.nan
    if dof <= len(_T975):
        return _T975[dof - 1]
    # Cornish-Fisher expansion around the normal quantile; error < 1e-4 for dof > 30.
    z = 1.959964
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, 95% half-width) of `values`; the half-width is NaN for fewer than two."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_ci: no values")
    if x.size == 1:
        return float(x[0]), math.nan
    return float(x.mean()), t975(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)


@dataclass(frozen=True)
class Summary:
    """Mean return with its 95% confidence interval, and the success rate."""

    episodes: int
    mean_return: float
    ci95: float
    """Half-width of the 95% confidence interval of the mean (Student's t)."""
    std_return: float
    success_rate: float
    mean_turns: float


def summarize(returns: Sequence[float], successes: Sequence[bool], turns: Sequence[int]) -> Summary:
    if len(returns) == 0:
        raise ValueError("summarize: no episodes")
    mean, ci = mean_ci(returns)
    std = float(np.std(returns, ddof=1)) if len(returns) > 1 else math.nan
    return Summary(len(returns), mean, ci, std, float(np.mean(successes)), float(np.mean(turns)))


def normalised_score(x: float, m: float | None, d: float | None, M: float | None) -> float | None:
    """The paper's normalised score (appendix E): 0 = the task minimum m, 50 = the offline
    dataset's average d, 100 = the expert maximum M; clipped below at 0. None where a
    constant is unpublished."""
    if m is None or d is None or M is None:
        return None
    score = 50 * (x - m) / (d - m) if x < d else 50 + 50 * (x - d) / (M - d)
    return max(0.0, score)
