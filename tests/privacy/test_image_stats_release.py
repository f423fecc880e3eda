"""An image silo's statistics released with DP: per channel, in the units the exact
statistics use, so the server merges and checks them the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core_training.channel_stats import compute_channel_stats
from core_training.data import Table
from core_training.schema import Schema
from privacy.ledger import PrivacyLedger
from privacy.stats_release import column_bounds, exact_sums, release_stats, sums_to_stats

SCHEMA = Schema.image((0, 1), 3, 4, 4)


def images() -> Table:
    rng = np.random.default_rng(0)
    X = rng.beta(2, 5, size=(300, 48)).astype(np.float32)
    X[:, 16:32] **= 2
    return Table(X, rng.integers(0, 2, 300), SCHEMA, "images")


def test_noiseless_sums_give_the_exact_channel_statistics() -> None:
    table = images()
    low, high = column_bounds(table)
    assert low.tolist() == [0.0] * 3 and high.tolist() == [1.0] * 3
    from_sums = sums_to_stats(exact_sums(table, low, high, histograms=True), low, high)
    exact = compute_channel_stats(table.X, table.y, 2, SCHEMA.image_shape)
    for name in ("count", "mean", "m2", "m3", "log_mean", "log_m2", "class_counts"):
        np.testing.assert_allclose(
            getattr(from_sums, name), getattr(exact, name), rtol=1e-5, atol=1e-6, err_msg=name
        )
    assert from_sums.hist is None


def test_a_large_epsilon_release_is_close_to_the_exact_figures(tmp_path: Path, key: bytes) -> None:
    table = images()
    ledger = PrivacyLedger.open(tmp_path / "l", key=key, budget_epsilon=1e9, delta=1e-5)
    released = release_stats(table, histograms=False, epsilon=1e5, ledger=ledger, seed=3)
    exact = compute_channel_stats(table.X, table.y, 2, SCHEMA.image_shape)
    assert released.count.shape == (3,)
    np.testing.assert_allclose(released.mean, exact.mean, atol=1e-3)
    np.testing.assert_allclose(released.m2 / 300, exact.m2 / 300, atol=1e-3)
    assert released.minimum.tolist() == [0.0] * 3  # the public range, never the silo's
    assert released.maximum.tolist() == [1.0] * 3
    assert [e.label for e in ledger.entries] == ["statistics"]  # spent before release
