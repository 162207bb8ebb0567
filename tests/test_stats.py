"""Summary statistics, intervals and the normalised score on hand-computed values."""

from __future__ import annotations

import math

import pytest

from lmrl_ray.stats import normalised_score, summarize, t975


def test_summary_of_hand_made_returns():
    s = summarize([1.0, 2.0, 3.0, 4.0], [True, False, True, True], [2, 4, 6, 8])
    # mean 2.5, sample std sqrt(5/3), t(3) = 3.182, half-width 3.182 * 1.29099 / 2
    assert s.mean_return == 2.5 and s.success_rate == 0.75 and s.mean_turns == 5
    assert s.std_return == pytest.approx(math.sqrt(5 / 3))
    assert s.ci95 == pytest.approx(3.182 * math.sqrt(5 / 3) / 2)


def test_t_quantiles_match_tables_and_approach_the_normal():
    assert t975(1) == 12.706 and t975(30) == 2.042
    assert t975(40) == pytest.approx(2.021, abs=1e-3)
    assert t975(120) == pytest.approx(1.980, abs=1e-3)
    assert t975(10**6) == pytest.approx(1.960, abs=1e-3)


def test_single_episode_has_no_interval_and_empty_is_an_error():
    assert math.isnan(summarize([1.0], [True], [1]).ci95)
    with pytest.raises(ValueError):
        summarize([], [], [])


@pytest.mark.parametrize(
    "x, expected",
    [(-101, 0.0), (-83, 50.0), (-6.84, 100.0), (-92, 25.0), (-200, 0.0), (-44.92, 75.0)],
)
def test_normalised_score_on_the_maze_constants(x, expected):
    assert normalised_score(x, -101, -83, -6.84) == pytest.approx(expected)


def test_normalised_score_is_none_without_constants():
    assert normalised_score(0.5, 0, None, None) is None
