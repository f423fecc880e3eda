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
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulations.flower_config import toml_value, write_flower_config

ROOT = Path(__file__).resolve().parents[1]  # the project: the app `flwr run` submits
FLWR = str(Path(sys.executable).with_name("flwr"))


# Ports this process has handed out: one stays free between the check here and the moment
# the process it was given to binds it, so it must not be handed out again meanwhile.
_HANDED_OUT: set[int] = set()
# Parallel test workers (pytest-xdist names them gw0, gw1, ... in PYTEST_XDIST_WORKER)
# each draw from a range of their own, so two workers never pick the same port in the
# moment between check and bind. The ranges lie below the kernel's ephemeral ports, where
# port 0 and outgoing connections (Ray's among them) take theirs.
_WORKER_PORTS_START, _WORKER_PORTS = 20000, 500


def free_port() -> int:
    """A TCP port nothing listens on now, never the same one twice in this process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        low = _WORKER_PORTS_START + (int(worker[2:]) % 24) * _WORKER_PORTS
        candidates = random.sample(range(low, low + _WORKER_PORTS), _WORKER_PORTS)
    else:
        candidates = [0] * 100  # the kernel's choice
    for candidate in candidates:
        with socket.socket() as s:
            try:
                s.bind(("", candidate))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free TCP port found")


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
            # Ray starts idle Python workers ahead of need (one per CPU, each importing
            # Ray) that a simulation never uses: its ClientApp actors start their own.
            RAY_enable_worker_prestart="0",
            RAY_prestart_worker_first_driver="0",
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

    def __enter__(self) -> LocalFlwr:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, *, grace: float = 10.0) -> None:
        """Kill the SuperLink (and the processes it started) on our ports: SIGTERM, and
        SIGKILL for whatever is still there after ``grace`` seconds."""
        port = self.env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"]
        pattern = f"flower-superlink.*--port {port}( |$)"
        pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        tree = [p for pid in pids.stdout.split() for p in [*_children(int(pid)), int(pid)]]
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for pid in tree:
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while any(_alive(p) for p in tree) and time.monotonic() < deadline:
                time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return [g for k in kids for g in _children(k)] + kids
