"""Fixtures for the whole suite, and how pytest-xdist shares it out among workers."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from privacy import keys


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own FEDSILO_HOME, no key variables and no remembered key
    folders, so nothing reads or writes ~/.fedsilo or leaks a key between tests."""
    home = tmp_path / "fedsilo-home"
    monkeypatch.setenv(keys.HOME_ENV, str(home))
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr(keys, "_key_folders_in_use", set())
    return home


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    """A real key file's key, kept in its own folder (the store refuses to write next to
    a key in use)."""
    return keys.load_key_file(keys.generate_key_file(tmp_path / "keys" / "k.key"))


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = tmp_path / "artifacts"
    folder.mkdir()
    return folder


# -- parallel runs (pytest-xdist) ----------------------------------------------------------
#
# A session- or module-scoped fixture (a real federation, a benchmark run, a round of the
# command-line tools) is built once per worker that runs a test using it. So the tests
# are handed out in groups: every test using one of the suite's session-scoped fixtures
# goes with the others using it, every other test using a module-scoped one with the rest
# of its module, and any other test on its own. The workers work the groups out from the
# fixtures they collected and write them to a folder the controller reads when it hands
# the tests out (with ``--dist loadgroup``; an explicit ``xdist_group`` mark names its
# group). Tests marked deployment, then e2e, run first: they are the longest.

GROUPS_FOLDER = "fedsilo_groups_folder"
_FOLDER_KEY = pytest.StashKey[str]()


def _group_of(item: pytest.Item) -> str:
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    info = getattr(item, "_fixtureinfo", None)
    shared: dict[str, set[str]] = {"session": set(), "module": set()}
    for name, defs in info.name2fixturedefs.items() if info else ():
        fixture = defs[-1]
        # the suite's own fixtures only: pytest's and plugins' have an empty baseid
        if fixture.baseid and fixture.scope in shared:
            shared[fixture.scope].add(name)
    if shared["session"]:
        return min(shared["session"])
    if shared["module"]:
        return _module(item)
    return item.nodeid


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the slowest modules first, whole (so that a module's fixtures are built once):
    # deployments, then the other end-to-end runs, then the rest in their order
    rank: dict[str, int] = {}
    for item in items:
        slow = [m for m in ("deployment", "e2e") if item.get_closest_marker(m)]
        order = ("deployment", "e2e").index(slow[0]) if slow else 2
        rank[_module(item)] = min(rank.get(_module(item), 2), order)
    items.sort(key=lambda i: rank[_module(i)])
    folder = getattr(config, "workerinput", {}).get(GROUPS_FOLDER)
    if folder:
        groups = {item.nodeid: _group_of(item) for item in items}
        path = Path(folder) / f"{config.workerinput['workerid']}.json"
        path.with_suffix(".tmp").write_text(json.dumps(groups))
        path.with_suffix(".tmp").replace(path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per CPU this process may use (xdist would count physical
    cores where psutil is installed), and at least two: much of the suite waits on
    Flower's processes rather than computing."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, cpus or 1)


def _distributing(config: pytest.Config) -> bool:
    return config.pluginmanager.has_plugin("xdist") and config.getoption("dist") == "loadgroup"


def pytest_configure(config: pytest.Config) -> None:
    if _distributing(config) and not hasattr(config, "workerinput"):
        config.stash[_FOLDER_KEY] = tempfile.mkdtemp(prefix="pytest-groups-")


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_FOLDER_KEY, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    folder = node.config.stash.get(_FOLDER_KEY, None)
    if folder:
        node.workerinput[GROUPS_FOLDER] = folder


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    folder = config.stash.get(_FOLDER_KEY, None)
    if not folder:
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """Units of work are the groups the workers wrote; in collection order."""

        def __init__(self) -> None:
            super().__init__(config, log)
            self.groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # every worker has collected by now
                self.groups = {}
                for path in sorted(Path(folder).glob("*.json")):
                    self.groups.update(json.loads(path.read_text()))
            return self.groups.get(nodeid, nodeid)

    config.option.loadscopereorder = False
    return GroupScheduling()
