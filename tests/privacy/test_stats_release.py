"""Statistics released with DP: clipped to the schema's public range, Gaussian noise of
the stated scale, spent from the silo's ledger before anything leaves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from core_training.data import Table
from core_training.preprocess import compute_stats
from core_training.schema import Feature, Schema
from privacy.ledger import BudgetExhaustedError, PrivacyLedger
from privacy.stats_release import (
    StatisticsBoundsError,
    exact_sums,
    release_stats,
    release_sums,
    sensitivities,
    sums_to_stats,
)

DELTA = 1e-5


def table(bounds: bool = True) -> Table:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(-50, 200, 400), rng.uniform(0, 3, 400)])
    X[:5, 0] = 10_000.0  # far outside the public range: clipped, never revealed
    y = (X[:, 1] > 1.5).astype(np.int64)
    features = (
        Feature("a", bounds=(-100.0, 300.0) if bounds else None),
        Feature("b", bounds=(0.0, 4.0) if bounds else None),
    )
    return Table(X, y, Schema("y", (0, 1), features), "test")


def open_ledger(tmp_path: Path, key: bytes, budget: float = 1e6) -> PrivacyLedger:
    return PrivacyLedger.open(tmp_path / "l.ledger", key=key, budget_epsilon=budget, delta=DELTA)


def test_sensitivities_are_the_hand_computed_bounds() -> None:
    sens = sensitivities(np.array([-100.0, 0.0]), np.array([300.0, 4.0]))
    assert sens["count"] == pytest.approx(np.sqrt(2))
    # half-widths of the ranges: 200 and 2 (values are centred on 100 and 2)
    assert sens["s1"] == pytest.approx(np.hypot(200.0, 2.0))
    assert sens["s2"] == pytest.approx(np.hypot(200.0**2, 4.0))
    assert sens["s3"] == pytest.approx(np.hypot(200.0**3, 8.0))
    assert sens["log_s1"] == pytest.approx(np.hypot(np.log1p(300.0), np.log1p(4.0)))
    assert sens["class_counts"] == 1.0


def test_the_release_is_recorded_in_the_ledger_at_the_policys_epsilon(
    tmp_path: Path, key: bytes
) -> None:
    ledger = open_ledger(tmp_path, key)
    release_stats(table(), histograms=False, epsilon=0.8, ledger=ledger, seed=1)
    (entry,) = ledger.entries
    assert entry.sample_rate == 1.0 and entry.steps == 7  # seven statistics, no histograms
    independent = RDPAccountant()
    independent.history = [(entry.noise_multiplier, 1.0, 7)]
    spent = independent.get_epsilon(delta=DELTA)
    assert spent <= 0.8 + 1e-9 and spent > 0.7
    assert ledger.spent_epsilon() == pytest.approx(spent)


def test_min_and_max_are_the_public_range_and_outliers_are_clipped(
    tmp_path: Path, key: bytes
) -> None:
    stats = release_stats(table(), histograms=False, epsilon=1.0, ledger=open_ledger(tmp_path, key))
    np.testing.assert_array_equal(stats.minimum, [-100.0, 0.0])
    np.testing.assert_array_equal(stats.maximum, [300.0, 4.0])
    assert 10_000.0 not in stats.maximum


def test_noise_has_the_stated_scale(tmp_path: Path, key: bytes) -> None:
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 10, (200, 40))  # 40 columns of one range: 40 draws per release
    y = (X[:, 0] > 5).astype(np.int64)
    features = tuple(Feature(f"c{i}", bounds=(0.0, 10.0)) for i in range(40))
    data = Table(X, y, Schema("y", (0, 1), features), "test")
    exact = (X - 5.0).sum(0)  # the centred sum, by hand
    ledger = open_ledger(tmp_path, key)
    errors = [
        release_sums(data, histograms=False, epsilon=2.0, ledger=ledger, seed=seed)["s1"] - exact
        for seed in range(25)
    ]
    sigma = ledger.entries[0].noise_multiplier
    want = sigma * 5.0 * np.sqrt(40)  # sigma times the L2 sensitivity of the sums
    pooled = np.asarray(errors).ravel()  # 1,000 draws: the sample std is within about 2%
    assert np.std(pooled) == pytest.approx(want, rel=0.08)
    assert abs(np.mean(pooled)) < 0.15 * want  # unbiased (the mean's spread is 3% of want)


def test_without_noise_the_conversion_gives_the_statistics_of_the_clipped_rows() -> None:
    data = table()
    low, high = np.array([-100.0, 0.0]), np.array([300.0, 4.0])
    want = compute_stats(np.clip(data.X, low, high), data.y, 2)
    got = sums_to_stats(exact_sums(data, low, high, False), low, high)
    np.testing.assert_array_equal(got.count, want.count)
    np.testing.assert_array_equal(got.class_counts, want.class_counts)
    for name in ("mean", "m2", "m3", "log_mean", "log_m2"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-9, atol=1e-6)


def test_a_numeric_column_without_a_range_cannot_be_released(tmp_path: Path, key: bytes) -> None:
    ledger = open_ledger(tmp_path, key)
    with pytest.raises(StatisticsBoundsError, match=r"a = \{ range = \[low, high\] \}"):
        release_stats(table(bounds=False), histograms=False, epsilon=1.0, ledger=ledger)
    assert ledger.entries == ()  # nothing spent


def test_a_release_over_budget_is_refused_before_anything_is_computed(
    tmp_path: Path, key: bytes
) -> None:
    ledger = open_ledger(tmp_path, key, budget=0.5)
    with pytest.raises(BudgetExhaustedError):
        release_stats(table(), histograms=False, epsilon=1.0, ledger=ledger)
    assert ledger.entries == ()
