"""What `pip install` puts in an environment: fedsilo's packages, never the test and
benchmark harnesses (a silo installs and reviews what it runs)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from fl_client.silo import NODE_CONFIG_KEYS, silo_for
from fl_common.settings import RunSettings, TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def test_the_harnesses_are_not_among_the_installed_packages() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    installed = set(find_packages(ROOT, include=include))
    assert {"core_training", "privacy", "fl_common", "fl_client", "fl_server"} <= installed
    assert "simulations" in installed
    assert not {name for name in installed if name.split(".")[0] in ("harness", "tests", "bench")}
    assert not (ROOT / "simulations" / "local_run.py").exists()
    assert not (ROOT / "fl_client" / "attack.py").exists()


def test_fedsilo_s_own_client_refuses_the_attack_option() -> None:
    """Only the harness's hostile app reads node-config ``attack``; the real ClientApp
    refuses it like any unknown key, so a production silo cannot be made to misbehave
    by a setting."""
    assert "attack" not in NODE_CONFIG_KEYS
    with pytest.raises(ValueError, match="attack"):
        silo_for(
            {"data-path": "silo.csv", "attack": "nan"},
            RunSettings(dataset="breast-cancer"),
            TrainConfig(),
        )
