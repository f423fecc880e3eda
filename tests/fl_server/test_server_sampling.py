"""Which nodes a round samples."""

from __future__ import annotations

import pytest

from fl_common.settings import RunSettings
from fl_server.transport import Transport


class Nodes:
    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def get_node_ids(self) -> list[int]:
        return list(self.ids)


class _Sampler:
    def __init__(self, nodes: int, fraction: float, min_nodes: int) -> None:
        settings = RunSettings(fraction_train=fraction, min_nodes=min_nodes)
        self.ids = list(range(1, nodes + 1))
        self.transport = Transport(Nodes(self.ids), settings, seed=0)

    def sample(self, server_round: int) -> list[int]:
        return self.transport.sample(server_round, self.ids)


def _loop(nodes: int, fraction: float, min_nodes: int = 2) -> _Sampler:
    return _Sampler(nodes, fraction, min_nodes)


@pytest.mark.parametrize(
    ("nodes", "fraction", "expected"),
    [(100, 0.07, 7), (1000, 0.01, 10), (100, 0.1, 10), (10, 1.0, 10), (30, 0.05, 2)],
)
def test_a_round_samples_the_fraction_rounded_up_not_one_more(nodes, fraction, expected):
    picked = _loop(nodes, fraction).sample(1)
    assert len(picked) == expected
    assert len(set(picked)) == expected and set(picked) <= set(range(1, nodes + 1))


def test_the_sample_is_seeded_by_round():
    loop = _loop(100, 0.1)
    assert loop.sample(3) == loop.sample(3)
    assert loop.sample(3) != loop.sample(4)
