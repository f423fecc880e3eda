"""Aggregation through real Flower strategies (make_strategy + aggregate), checked
against the arithmetic done by hand with numpy."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)
from flwr.supercore.task_identity import TaskIdentity

from fl_common.protocol import numpy_to_record, record_to_numpy
from fl_common.settings import STRATEGIES, RunSettings
from fl_server.aggregation import Update, aggregate, make_strategy

W, B = "net.0.weight", "net.0.bias"
SHAPES = {W: (6, 5), B: (6,)}


class NodesOnly:
    """The one Grid method a strategy's configure_train reads (which nodes exist)."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def get_node_ids(self) -> list[int]:
        return list(self.ids)


@pytest.fixture
def server_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure_train builds Messages, which need the identity a ServerApp process has."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def arrays(seed: int, center: float = 0.0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (center + scale * rng.normal(size=s)).astype(np.float32) for k, s in SHAPES.items()}


def updates(n: int, counts: list[int] | None = None) -> list[Update]:
    counts = counts or [10 * (i + 1) for i in range(n)]
    return [Update(f"node {i}", arrays(i), counts[i]) for i in range(n)]


def run(name: str, ups: list[Update], **settings: object) -> dict[str, np.ndarray]:
    strategy = make_strategy(RunSettings(**settings), strategy=name)  # type: ignore[arg-type]
    return record_to_numpy(aggregate(strategy, 1, ups))


def stacked(ups: list[Update], key: str) -> np.ndarray:
    return np.stack([u.arrays[key].astype(np.float64) for u in ups])


# -- building --------------------------------------------------------------------------


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_configured_strategy_can_be_built(name: str) -> None:
    strategy = make_strategy(RunSettings(strategy=name))
    assert isinstance(strategy, Strategy)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("fedavg", FedAvg),
        ("fedprox", FedProx),
        ("fedadam", FedAdam),
        ("fedmedian", FedMedian),
        ("trimmed-mean", FedTrimmedAvg),
        ("krum", Krum),
    ],
)
def test_strategy_name_maps_to_the_flower_class(name: str, cls: type) -> None:
    assert type(make_strategy(RunSettings(), strategy=name)) is cls


def test_strategy_settings_reach_the_flower_strategy() -> None:
    settings = RunSettings(
        proximal_mu=0.25, trimmed_beta=0.3, krum_malicious=2, server_learning_rate=0.5
    )
    assert make_strategy(settings, strategy="fedprox").proximal_mu == 0.25
    assert make_strategy(settings, strategy="trimmed-mean").beta == 0.3
    assert make_strategy(settings, strategy="krum").num_malicious_nodes == 2
    assert make_strategy(settings, strategy="fedadam").eta == 0.5


def test_unknown_strategy_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'fedsgd'"):
        make_strategy(RunSettings(), strategy="fedsgd")


def test_aggregating_no_updates_is_refused() -> None:
    with pytest.raises(ValueError, match="no valid updates"):
        aggregate(make_strategy(RunSettings()), 1, [])


# -- arithmetic ------------------------------------------------------------------------


def test_fedavg_is_the_example_weighted_mean() -> None:
    ups = updates(3, counts=[10, 30, 60])
    out = run("fedavg", ups)
    weights = np.array([10, 30, 60], dtype=np.float64) / 100
    for key in SHAPES:
        expected = np.tensordot(weights, stacked(ups, key), axes=1)
        np.testing.assert_allclose(out[key], expected, rtol=1e-5, atol=1e-6)


def test_fedavg_differs_from_the_unweighted_mean_when_counts_differ() -> None:
    ups = updates(3, counts=[1, 1, 98])
    out = run("fedavg", ups)
    assert not np.allclose(out[W], stacked(ups, W).mean(0), atol=1e-3)
    np.testing.assert_allclose(out[W], ups[2].arrays[W], atol=0.1)


def test_fedprox_aggregates_like_fedavg() -> None:
    ups = updates(4)
    fedavg, fedprox = run("fedavg", ups), run("fedprox", ups, proximal_mu=0.5)
    for key in SHAPES:
        np.testing.assert_allclose(fedprox[key], fedavg[key], rtol=1e-6)


def test_fedmedian_is_the_elementwise_median() -> None:
    ups = updates(5)
    out = run("fedmedian", ups)
    for key in SHAPES:
        np.testing.assert_allclose(out[key], np.median(stacked(ups, key), axis=0), rtol=1e-6)


def test_fedmedian_ignores_example_counts() -> None:
    a = run("fedmedian", updates(5, counts=[1, 1, 1, 1, 1]))
    b = run("fedmedian", updates(5, counts=[1, 2, 3, 500, 9]))
    np.testing.assert_array_equal(a[W], b[W])


def test_trimmed_mean_drops_the_extremes_of_each_element() -> None:
    ups = updates(5)
    out = run("trimmed-mean", ups, trimmed_beta=0.2)
    for key in SHAPES:
        middle = np.sort(stacked(ups, key), axis=0)[1:4]  # int(0.2 * 5) = 1 cut per side
        np.testing.assert_allclose(out[key], middle.mean(0), rtol=1e-5, atol=1e-6)


def test_trimmed_mean_is_not_moved_by_a_huge_outlier() -> None:
    honest = updates(5)
    poisoned = [*honest[:4], Update("node 4", {k: v + 1e6 for k, v in arrays(4).items()}, 50)]
    out = run("trimmed-mean", poisoned, trimmed_beta=0.2)
    plain = run("fedavg", poisoned)
    honest_range = stacked(honest[:4], W)
    assert np.all(out[W] <= honest_range.max(0) + 1e-5)
    assert np.all(out[W] >= honest_range.min(0) - 1e-5)
    assert np.abs(out[W]).max() < 5
    assert np.abs(plain[W]).min() > 1e5  # the plain mean is dragged away


def test_krum_picks_an_honest_update_when_one_is_scaled_by_100() -> None:
    honest = [Update(f"node {i}", arrays(i, center=1.0, scale=0.1), 10) for i in range(5)]
    attacker = Update("node 5", {k: v * 100 for k, v in arrays(5, 1.0, 0.1).items()}, 10)
    ups = [honest[0], honest[1], attacker, honest[2], honest[3], honest[4]]
    out = run("krum", ups, krum_malicious=1)
    matches = [
        u.name for u in ups if all(np.allclose(out[k], u.arrays[k], rtol=1e-6) for k in SHAPES)
    ]
    assert len(matches) == 1
    assert matches[0] != "node 5"
    assert np.abs(out[W] - 1.0).max() < 1.0


def test_fedadam_takes_a_bias_corrected_adam_step(server_identity: None) -> None:
    settings = RunSettings(strategy="fedadam", server_learning_rate=0.05)
    strategy = make_strategy(settings)
    current = arrays(100)
    sent = list(
        strategy.configure_train(1, numpy_to_record(current), ConfigRecord({}), NodesOnly([7, 8]))
    )
    assert sorted(m.metadata.dst_node_id for m in sent) == [7, 8]
    ups = updates(2, counts=[10, 30])
    out = record_to_numpy(aggregate(strategy, 1, ups))
    beta_1, beta_2, tau, eta, server_round = 0.9, 0.99, 1e-3, 0.05, 1
    for key in SHAPES:
        avg = np.tensordot(np.array([0.25, 0.75]), stacked(ups, key), axes=1)
        delta = avg - current[key]
        m, v = (1 - beta_1) * delta, (1 - beta_2) * delta**2
        eta_norm = (
            eta * np.sqrt(1 - beta_2 ** (server_round + 1)) / (1 - beta_1 ** (server_round + 1))
        )
        expected = current[key] + eta_norm * m / (np.sqrt(v) + tau)
        np.testing.assert_allclose(out[key], expected, rtol=1e-4, atol=1e-6)


def test_fedadam_without_configure_train_cannot_aggregate() -> None:
    from flwr.serverapp.exception import AggregationError

    with pytest.raises(AggregationError, match="configure_train"):
        aggregate(make_strategy(RunSettings(strategy="fedadam")), 1, updates(2))


# -- contract for every strategy ---------------------------------------------------------


def prepared(name: str, current: dict[str, np.ndarray]):  # type: ignore[no-untyped-def]
    strategy = make_strategy(RunSettings(strategy=name, krum_malicious=1))
    if name == "fedadam":
        grid = NodesOnly([1, 2, 3, 4, 5])
        list(strategy.configure_train(1, numpy_to_record(current), ConfigRecord({}), grid))
    return strategy


@pytest.mark.parametrize("name", STRATEGIES)
def test_aggregate_keeps_keys_shapes_and_dtypes(name: str, server_identity: None) -> None:
    """The next round validates replies against this result: a float32 model must stay
    float32, or every float32 reply would be rejected as having the wrong dtype."""
    ups = updates(5)
    out = record_to_numpy(aggregate(prepared(name, arrays(100)), 1, ups))
    assert sorted(out) == sorted(SHAPES)
    for key, shape in SHAPES.items():
        assert out[key].shape == shape
        assert out[key].dtype == np.float32, f"{name}: {key} is {out[key].dtype}"
        assert np.isfinite(out[key]).all()


@pytest.mark.parametrize("name", STRATEGIES)
def test_identical_updates_aggregate_to_that_update(name: str, server_identity: None) -> None:
    common = arrays(3)
    ups = [Update(f"node {i}", {k: v.copy() for k, v in common.items()}, 5 + i) for i in range(5)]
    out = record_to_numpy(aggregate(prepared(name, common), 1, ups))
    for key in SHAPES:
        np.testing.assert_allclose(out[key], common[key], rtol=1e-6, atol=1e-7)
