"""Run the real `flwr run .` against a private local SuperLink, and clean up after.

Used by the end-to-end tests and the benchmarks.

Each LocalFlwr gets its own FLWR_HOME, FEDSILO_HOME and free ports, so it never
touches a user's Flower set-up or a SuperLink started by someone else. The SuperLink
that `flwr run` starts detached keeps running between runs (so later runs skip its
start-up) until :meth:`LocalFlwr.stop` kills it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FLWR = str(Path(sys.executable).with_name("flwr"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def write_flower_config(flwr_home: Path, *, in_memory: bool) -> Path:
    """A Flower configuration whose default connection is the local SuperLink that
    ``flwr run`` starts itself, with its state in memory or in a SQLite file."""
    address = ":local-in-memory:" if in_memory else ":local:"
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "{address}"\n')
    return path


@dataclass
class FlwrRun:
    returncode: int
    output: str
    run_dir: Path | None
    seconds: float  # wall time of the whole `flwr run` command

    @property
    def summary(self) -> dict[str, Any]:
        assert self.run_dir is not None, self.output[-3000:]
        return json.loads((self.run_dir / "summary.json").read_text())

    @property
    def history(self) -> list[dict[str, Any]]:
        assert self.run_dir is not None, self.output[-3000:]
        return json.loads((self.run_dir / "history.json").read_text())


class LocalFlwr:
    """``in_memory``: the local SuperLink keeps its state in memory (Flower's
    ``:local-in-memory:`` address) instead of a SQLite file; a simulation needs nothing
    of it after the run, and every message skips a database write."""

    def __init__(self, base: Path, *, in_memory: bool = True) -> None:
        self.base = base
        self.env = dict(os.environ)
        self.env.update(
            FLWR_HOME=str(base / "flwr-home"),
            FEDSILO_HOME=str(base / "fedsilo-home"),
            FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()),
            FLWR_LOCAL_CONTROL_API_PORT=str(free_port()),
            FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
            FLWR_DISABLE_UPDATE_CHECK="1",
            PYTHONUNBUFFERED="1",
            # flwr starts flower-superlink by name: it must come from this environment
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        self.env.pop("FEDSILO_KEY", None)
        self.env.pop("FEDSILO_PASSPHRASE", None)
        write_flower_config(Path(self.env["FLWR_HOME"]), in_memory=in_memory)

    @property
    def artifacts(self) -> Path:
        return self.base / "artifacts"

    def run(
        self,
        run_config: dict[str, Any],
        *,
        supernodes: int = 2,
        timeout: float = 420,
        app: Path = ROOT,
        federation: dict[str, Any] | None = None,
    ) -> FlwrRun:
        """``flwr run <app>`` with run-config overrides; ``federation`` adds
        federation-config keys (e.g. ``{"client-resources-num-cpus": 1}``)."""
        config = dict(run_config)
        if Path(app) == ROOT:
            config = {"artifacts-dir": str(self.artifacts), **config}
        fed = {"num-supernodes": supernodes, **(federation or {})}
        cmd = [FLWR, "run", str(app), "--stream"]
        if config:
            cmd += ["--run-config", " ".join(f"{k}={toml_value(v)}" for k, v in config.items())]
        cmd += ["--federation-config", " ".join(f"{k}={toml_value(v)}" for k, v in fed.items())]
        started = time.perf_counter()
        proc = subprocess.run(
            cmd, env=self.env, cwd=self.base, capture_output=True, text=True, timeout=timeout
        )
        output = proc.stdout + proc.stderr
        run_dir = None
        for line in output.splitlines():
            if "outputs in " in line:
                run_dir = Path(line.rsplit("outputs in ", 1)[1].strip())
        return FlwrRun(proc.returncode, output, run_dir, time.perf_counter() - started)

    def stop(self) -> None:
        """Kill the SuperLink (and the processes it started) on our ports."""
        port = self.env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"]
        pattern = f"flower-superlink.*--port {port}"
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
            for pid in pids.stdout.split():
                for child in [*_children(int(pid)), int(pid)]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, sig)
            time.sleep(1)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return [g for k in kids for g in _children(k)] + kids
