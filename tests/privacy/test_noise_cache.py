"""Noise levels remembered in the fedsilo home: a later process skips the search, and a
remembered level is used only when it still keeps the target (an edited file can cost
utility, never privacy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rdp_reference

from privacy import dp, noise_cache

DELTA = 1e-5
PLAN = {"target_delta": DELTA, "sample_rate": 0.25, "steps": 16}
TARGET = 2.0


@pytest.fixture
def searches(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every RDP noise search Opacus runs; the in-process cache starts empty, as in a
    new process."""
    dp._noise_search.cache_clear()
    calls: list[dict] = []
    real = dp.get_noise_multiplier

    def counted(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(dp, "get_noise_multiplier", counted)
    return calls


def _levels(home: Path) -> dict[str, float]:
    return json.loads((home / noise_cache.FILE_NAME).read_text())


def _rdp_level() -> float:
    return dp.noise_for_target(target_epsilon=TARGET, **PLAN, accountant="rdp")


def test_a_new_process_reuses_the_level_found_earlier(searches, isolated_home: Path) -> None:
    sigma = _rdp_level()
    assert len(searches) == 1
    key = noise_cache.cache_key(TARGET, DELTA, 0.25, 16, "rdp")
    assert _levels(isolated_home) == {key: sigma}
    dp._noise_search.cache_clear()  # what a new process starts with
    assert _rdp_level() == sigma
    assert len(searches) == 1
    # the level keeps the target by an independent accountant (integer orders: <= 2% above)
    assert rdp_reference.epsilon([(sigma, 0.25, 16)], delta=DELTA) <= TARGET * 1.02


def test_an_edited_level_that_would_break_the_target_is_searched_again(
    searches, isolated_home: Path
) -> None:
    sigma = _rdp_level()
    key = noise_cache.cache_key(TARGET, DELTA, 0.25, 16, "rdp")
    (isolated_home / noise_cache.FILE_NAME).write_text(json.dumps({key: sigma / 2}))
    dp._noise_search.cache_clear()
    assert _rdp_level() == sigma  # the search's answer, not the edited one
    assert len(searches) == 2
    assert _levels(isolated_home) == {key: sigma}


def test_an_edited_larger_level_costs_utility_not_privacy(searches, isolated_home: Path) -> None:
    sigma = _rdp_level()
    key = noise_cache.cache_key(TARGET, DELTA, 0.25, 16, "rdp")
    (isolated_home / noise_cache.FILE_NAME).write_text(json.dumps({key: sigma * 3}))
    dp._noise_search.cache_clear()
    assert _rdp_level() == sigma * 3  # more noise than needed: still within the target
    assert len(searches) == 1


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"rdp|2.0|1e-05|0.25|16": -1}'])
def test_a_damaged_file_is_ignored_and_replaced(
    searches, isolated_home: Path, content: str
) -> None:
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / noise_cache.FILE_NAME).write_text(content)
    sigma = _rdp_level()
    assert len(searches) == 1
    assert list(_levels(isolated_home).values()) == [sigma]


def test_an_unreachable_target_is_not_remembered(searches, isolated_home: Path) -> None:
    with pytest.raises(dp.TargetUnreachableError):
        dp.noise_for_target(target_epsilon=0.05, **PLAN, accountant="rdp")
    assert not (isolated_home / noise_cache.FILE_NAME).exists()


def test_in_one_process_a_search_runs_once_and_an_unreachable_target_stays_refused(
    searches,
) -> None:
    """A silo asks for its run's noise several times a round; the search (dozens of
    accountant evaluations) runs once, and every ask gets the same answer."""
    first = dp.noise_for_target(target_epsilon=TARGET, **PLAN, accountant="prv")
    assert dp.noise_for_target(target_epsilon=TARGET, **PLAN, accountant="prv") == first
    assert _rdp_level() > first
    assert len(searches) == 1  # the RDP search that brackets PRV's, reused by the RDP ask
    for _ in range(2):  # refused each time, from one search
        with pytest.raises(dp.TargetUnreachableError, match="no noise level"):
            dp.noise_for_target(target_epsilon=0.05, **PLAN, accountant="rdp")
    assert len(searches) == 2


def test_the_file_keeps_at_most_its_bound_newest_last(isolated_home: Path) -> None:
    for i in range(noise_cache.MAX_ENTRIES + 5):
        noise_cache.remember(f"k{i}", 1.0 + i)
    kept = _levels(isolated_home)
    assert len(kept) == noise_cache.MAX_ENTRIES
    assert "k4" not in kept and "k5" in kept
    assert list(kept)[-1] == f"k{noise_cache.MAX_ENTRIES + 4}"
