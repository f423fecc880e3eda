"""A real Flower deployment on one machine: one SuperLink and N SuperNodes on loopback,
with TLS and SuperNode authentication, each silo with its own data files, keys and ports.

What it does, in the order an operator and the data owners would (docs/deployment.md):

1. splits a data set into one folder per silo (``data.csv`` + ``schema.toml``);
2. makes a CA, the SuperLink's TLS certificate and one authentication key pair per silo
   (:mod:`fl_server.certs`), and an encryption key per silo and for the server;
3. starts ``flower-superlink`` with TLS, ``--enable-supernode-auth`` and a database (so
   registrations and state survive a restart), on a free port;
4. registers each silo's public key (``flwr supernode register``);
5. starts one ``flower-supernode`` per silo with its ``data-path``, ``schema``,
   ``key-file`` and ``ledger-path`` in node-config;
6. submits runs with ``flwr run <project> <connection>`` and reads their outputs;
7. stops everything it started, also on errors (a context manager).

Every process it starts carries the environment variable ``FEDSILO_DEPLOY=<id>:<role>``,
inherited by the processes Flower starts in turn (SuperExec, ServerApp, ClientApps, some
of which Flower detaches into their own sessions); stopping finds them by that tag, so
nothing outlives the launcher and nothing else is touched.

    python -m harness.deploy_local --silos 3 --dataset digits --rounds 5
    python -m harness.deploy_local --silos 2 --run-config "dp=true target-epsilon=4.0"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl_server.certs import make_all, make_node_keys
from privacy.keys import generate_key_file
from simulations.flower_config import toml_value
from simulations.silo_data import make_silo_data

from .attack import hostile_app
from .local_run import ROOT, free_port

BIN = Path(sys.executable).parent
TAG = "FEDSILO_DEPLOY"
CONNECTION = "fedsilo-local"


class DeploymentError(RuntimeError):
    """A process did not start, connect or finish in time (the message says which)."""


@dataclass
class SiloNode:
    """One silo: its folder (data, schema, ledger), keys and SuperNode."""

    name: str
    folder: Path
    port: int
    node_config: dict[str, Any]
    auth_key: Path
    auth_pub: Path
    node_id: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "supernode.log"

    @property
    def ledger(self) -> Path:
        return Path(self.node_config["ledger-path"])

    @property
    def key_file(self) -> Path:
        return Path(self.node_config["key-file"])


@dataclass
class DeployedRun:
    """A submitted ``flwr run``; the ServerApp prints where its outputs go."""

    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)
    returncode: int | None = None

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def run_id(self) -> int | None:
        for line in self.output.splitlines():
            if "Successfully started run" in line:
                return int(line.rsplit(" ", 1)[1])
        return None

    @property
    def run_dir(self) -> Path | None:
        found = None
        for line in self.output.splitlines():
            if "outputs in " in line:
                found = Path(line.rsplit("outputs in ", 1)[1].strip())
        return found

    def wait(self, timeout: float) -> int:
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeploymentError(
                f"flwr run did not finish within {timeout:g}s; last output:\n" + self.output[-3000:]
            ) from None
        return self.returncode

    def history(self) -> list[dict[str, Any]]:
        """The run's history so far (written after every round); empty before."""
        if self.run_dir is None or not (self.run_dir / "history.json").exists():
            return []
        try:
            return json.loads((self.run_dir / "history.json").read_text())
        except json.JSONDecodeError:  # being rewritten at this moment
            return []

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self._file("summary.json").read_text())

    def _file(self, name: str) -> Path:
        if self.run_dir is None:
            raise DeploymentError("the run has not printed its outputs folder:\n" + self.output)
        return self.run_dir / name


# The silos this launcher makes chose, in their own policy files, to allow runs without
# DP (a demo and test harness); pass ``policies`` for silos that decide otherwise.
PERMISSIVE_POLICY: dict[str, Any] = {
    "privacy": {"require-dp": False, "max-epsilon-per-run": 10.0, "budget": 20.0}
}


def write_policy(path: Path, policy: dict[str, Any]) -> Path:
    """A silo's policy file from ``{"silo-id": ..., "privacy": {...}, ...}``."""
    lines = [f"{k} = {toml_value(v)}" for k, v in policy.items() if not isinstance(v, dict)]
    for table, values in policy.items():
        if isinstance(values, dict):
            lines += ["", f"[{table}]", *(f"{k} = {toml_value(v)}" for k, v in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


class LocalDeployment:
    """One SuperLink and ``silos`` SuperNodes under ``base``; use as a context manager.

    ``node_config`` adds node-config entries per silo index (e.g. ``{2: {"attack":
    "nan"}}``). ``policies`` gives a silo's policy file as a dict of TOML tables per silo
    index (None: no policy file, so the silo runs under the built-in defaults, which
    require DP); a silo not named gets ``PERMISSIVE_POLICY``, written to its folder.
    ``node_args`` adds flower-supernode arguments per silo index. ``run_config`` holds
    defaults for every submitted run. ``database`` keeps the
    SuperLink's state in a SQLite file, so that a restarted SuperLink still knows the
    registered silos; without it the state is in memory.
    """

    def __init__(
        self,
        base: str | Path,
        *,
        silos: int = 2,
        dataset: str = "digits",
        partitioner: str = "iid",
        alpha: float = 0.5,
        seed: int = 0,
        node_config: dict[int, dict[str, Any]] | None = None,
        policies: dict[int, dict[str, Any] | None] | None = None,
        node_args: dict[int, list[str]] | None = None,
        run_config: dict[str, Any] | None = None,
        isolation: str = "subprocess",
        database: bool = True,
    ) -> None:
        self.base = Path(base).resolve()
        self.database = database
        self.num_silos = silos
        self.dataset, self.partitioner, self.alpha, self.seed = dataset, partitioner, alpha, seed
        self.extra_node_config = node_config or {}
        self.policies = policies or {}
        self.node_args = node_args or {}
        self.isolation = isolation
        self.id = uuid.uuid4().hex[:12]
        self.port = 0
        self.silos: list[SiloNode] = []
        self.superlink: subprocess.Popen[bytes] | None = None
        self.run_config: dict[str, Any] = {
            "artifacts-dir": str(self.base / "artifacts"),
            "validation": "federated",
            "dataset": dataset,
            "seed": seed,
            **(run_config or {}),
        }
        self._runs: list[DeployedRun] = []

    # -- paths -------------------------------------------------------------------------

    @property
    def certs(self) -> Path:
        return self.base / "certs"

    @property
    def server_dir(self) -> Path:
        return self.base / "server"

    @property
    def operator_home(self) -> Path:
        return self.base / "operator"  # FLWR_HOME of the `flwr` CLI: config.toml

    @property
    def server_key(self) -> Path:
        return self.server_dir / "fedsilo-home" / "key"

    @property
    def superlink_log(self) -> Path:
        return self.server_dir / "superlink.log"

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, timeout: float = 120) -> None:
        """Prepare everything, start the SuperLink, register and start every silo."""
        self.prepare()
        self.start_superlink(timeout=timeout)
        for silo in self.silos:
            self.register(silo)
        for i, silo in enumerate(self.silos):
            self.start_node(silo, extra_args=self.node_args.get(i))
        self.wait_online([s.node_id for s in self.silos], timeout=timeout)

    def prepare(self) -> None:
        """Silo data, certificates, keys and the operator's connection (once)."""
        if self.silos:
            return
        self.base.mkdir(parents=True, exist_ok=True)
        schema, folders = make_silo_data(
            self.base / "silos",
            silos=self.num_silos,
            dataset=self.dataset,
            partitioner=self.partitioner,
            alpha=self.alpha,
            seed=self.seed,
        )
        self.run_config.setdefault("schema", str(schema))
        names = [f.name for f in folders]
        made = make_all(self.certs, hosts=["127.0.0.1"], nodes=names)
        for i, folder in enumerate(folders):
            key_file = generate_key_file(self.base / "silo-keys" / folder.name / "key")
            config = {
                "data-path": str(folder / "data.csv"),
                "schema": str(folder / "schema.toml"),
                "key-file": str(key_file),
                "ledger-path": str(folder / "privacy.ledger"),
                **self.extra_node_config.get(i, {}),
            }
            policy = self.policies.get(i, PERMISSIVE_POLICY)
            if policy is not None:
                config["policy"] = str(write_policy(folder / "policy.toml", policy))
            pair = made[folder.name]
            self.silos.append(
                SiloNode(folder.name, folder, free_port(), config, pair.private, pair.public)
            )
        self.server_dir.mkdir(parents=True, exist_ok=True)
        generate_key_file(self.server_key)
        self.port = free_port()
        self.operator_home.mkdir(parents=True, exist_ok=True)
        (self.operator_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f"[superlink.{CONNECTION}]\n"
            f'address = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.certs / "ca.crt"}"\n'
        )

    def stop(self, *, grace: float = 5.0) -> None:
        """Stop every process this deployment started (SIGTERM, then SIGKILL)."""
        for run in self._runs:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait(timeout=10)
        self._signal_role("", signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self._tagged("") and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(20):
            if not self._tagged(""):
                break
            self._signal_role("", signal.SIGKILL)
            time.sleep(0.25)
        for proc in [self.superlink, *(s.proc for s in self.silos)]:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)

    # -- the SuperLink -----------------------------------------------------------------

    def start_superlink(self, *, timeout: float = 60) -> None:
        certs = self.certs
        cmd = [
            str(BIN / "flower-superlink"),
            "--ssl-ca-certfile",
            str(certs / "ca.crt"),
            "--ssl-certfile",
            str(certs / "server.crt"),
            "--ssl-keyfile",
            str(certs / "server.key"),
            "--enable-supernode-auth",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *(["--database", str(self.server_dir / "superlink.db")] if self.database else []),
            "--isolation",
            self.isolation,
            "--disable-runtime-dependency-installation",
        ]
        env = {
            "FLWR_HOME": str(self.server_dir / "flwr-home"),
            "FEDSILO_HOME": str(self.server_key.parent),
        }
        mark = _size(self.superlink_log)
        self.superlink = self._spawn("superlink", cmd, env, self.superlink_log, self.server_dir)
        self._wait_log(self.superlink_log, mark, "Uvicorn running on", self.superlink, timeout)

    def kill_superlink(self, sig: int = signal.SIGKILL) -> None:
        """Stop the SuperLink and everything it started (its ServerApp included)."""
        self._signal_role("superlink", sig)
        deadline = time.monotonic() + 15
        while self._tagged("superlink") and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._tagged("superlink"):
            self._signal_role("superlink", signal.SIGKILL)
        if self.superlink is not None:
            self.superlink.wait(timeout=10)

    # -- SuperNodes --------------------------------------------------------------------

    def register(self, silo: SiloNode) -> int:
        """``flwr supernode register`` with the silo's public key; returns its node id."""
        out = self.flwr("supernode", "register", str(silo.auth_pub), CONNECTION, "--format", "json")
        silo.node_id = int(_json_in(out)["node-id"])
        return silo.node_id

    def start_node(self, silo: SiloNode, *, extra_args: list[str] | None = None) -> None:
        """Start (or restart) the silo's SuperNode with TLS and its authentication key."""
        cmd = self._supernode_command(silo.port, silo.node_config)
        cmd += ["--root-certificates", str(self.certs / "ca.crt")]
        cmd += ["--auth-supernode-private-key", str(silo.auth_key)]
        cmd += ["--isolation", self.isolation, *(extra_args or [])]
        env = {
            "FLWR_HOME": str(silo.folder / "flwr-home"),
            "FEDSILO_HOME": str(silo.key_file.parent),
        }
        silo.proc = self._spawn(f"node:{silo.name}", cmd, env, silo.log, silo.folder)

    def kill_node(self, silo: SiloNode, sig: int = signal.SIGKILL) -> None:
        """Kill the silo's SuperNode and its ClientApp processes (a silo going down)."""
        self._signal_role(f"node:{silo.name}", sig)
        deadline = time.monotonic() + 10
        while self._tagged(f"node:{silo.name}") and time.monotonic() < deadline:
            time.sleep(0.1)
        if silo.proc is not None:
            silo.proc.wait(timeout=10)

    def restart_node(self, silo: SiloNode, *, timeout: float = 120) -> None:
        """Bring a crashed silo back. The SuperLink refuses to activate a node it still
        counts as online, and it counts a silent node as online until two heartbeats
        (up to 60 s) are missed: wait for that, then start it and wait until online."""
        wait_until(
            lambda: self.nodes().get(silo.node_id) != "online",
            timeout=timeout,
            what=f"the SuperLink to see {silo.name} offline",
            interval=2.0,
        )
        self.start_node(silo)
        self.wait_online([silo.node_id], timeout=timeout)

    def nodes(self) -> dict[int, str]:
        """Node id -> status (``online``, ``offline``, ``registered``) from the SuperLink."""
        out = self.flwr("supernode", "list", CONNECTION, "--format", "json")
        return {int(n["node-id"]): str(n["status"]) for n in _json_in(out)["nodes"]}

    def wait_online(self, node_ids: list[int | None], *, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        wanted = {n for n in node_ids if n is not None}
        while True:
            status = self.nodes()
            if all(status.get(n) == "online" for n in wanted):
                return
            for silo in self.silos:
                if (
                    silo.node_id in wanted
                    and silo.proc is not None
                    and silo.proc.poll() is not None
                ):
                    raise DeploymentError(
                        f"the SuperNode of {silo.name} exited ({silo.proc.returncode}):\n"
                        + _tail(silo.log)
                    )
            if time.monotonic() > deadline:
                raise DeploymentError(f"nodes not online within {timeout:g}s: {status}")
            time.sleep(1.0)

    def attempt_node(
        self,
        *,
        auth_key: Path | None,
        root_certificates: Path | None,
        insecure: bool = False,
        timeout: float = 60,
    ) -> tuple[int | None, str]:
        """Start a SuperNode that may not be admitted (with silo 0's data) and let it try
        once. Returns its exit code (None if it was still running after ``timeout``
        seconds, then killed) and its output."""
        cmd = self._supernode_command(free_port(), self.silos[0].node_config)
        cmd += ["--max-retries", "1"]
        if insecure:
            cmd.append("--insecure")
        if root_certificates is not None:
            cmd += ["--root-certificates", str(root_certificates)]
        if auth_key is not None:
            cmd += ["--auth-supernode-private-key", str(auth_key)]
        folder = self.base / "intruder"
        log = folder / f"attempt-{uuid.uuid4().hex[:6]}.log"
        proc = self._spawn("intruder", cmd, {"FLWR_HOME": str(folder / "flwr-home")}, log, folder)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            self._signal_role("intruder", signal.SIGKILL)
            proc.wait(timeout=10)
        return code, log.read_text(errors="replace")

    def _supernode_command(self, port: int, node_config: dict[str, Any]) -> list[str]:
        config = " ".join(f"{k}={toml_value(v)}" for k, v in node_config.items())
        return [
            str(BIN / "flower-supernode"),
            *("--superlink", f"127.0.0.1:{self.port}"),
            *("--port", str(port)),
            *("--node-config", config),
        ]

    def new_node_keys(self, name: str) -> tuple[Path, Path]:
        """A key pair the SuperLink does not know (for admission tests)."""
        pair = make_node_keys(self.certs / "extra", name)
        return pair.private, pair.public

    # -- runs --------------------------------------------------------------------------

    @property
    def app(self) -> Path:
        """The app folder runs are submitted from: the project, or, when a silo was given
        an ``attack``, the project with the hostile ClientApp of :mod:`harness.attack`."""
        if not any("attack" in extra for extra in self.extra_node_config.values()):
            return ROOT
        return hostile_app(ROOT, self.base / "hostile-app")

    def submit(self, run_config: dict[str, Any] | None = None) -> DeployedRun:
        """``flwr run <project> <connection> --stream`` in the background."""
        config = {**self.run_config, **(run_config or {})}
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in config.items())
        log = self.base / "runs" / f"run-{len(self._runs) + 1}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [str(BIN / "flwr"), "run", str(self.app), CONNECTION, "--stream"]
        cmd += ["--run-config", overrides]
        proc = self._spawn("cli", cmd, self._cli_env(), log, self.base)
        run = DeployedRun(proc, log)
        self._runs.append(run)
        return run

    def run(self, run_config: dict[str, Any] | None = None, *, timeout: float = 300) -> DeployedRun:
        """Submit a run and wait for it to finish."""
        run = self.submit(run_config)
        run.wait(timeout)
        return run

    def flwr(self, *args: str, timeout: float = 60) -> str:
        """A ``flwr`` CLI command as the operator; its output (raises on failure)."""
        proc = subprocess.run(
            [str(BIN / "flwr"), *args],
            env=self._cli_env(),
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
        if proc.returncode != 0:
            raise DeploymentError(f"flwr {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    # -- observing ---------------------------------------------------------------------

    def rss_kib(self, role: str = "superlink") -> dict[str, int]:
        """Resident memory (KiB) of the processes of ``role``: its main process alone
        (``main``: the SuperLink, or a silo's SuperNode) and with every process it
        started (``tree``: SuperExec, ServerApp or ClientApps)."""
        main_proc = self.superlink if role == "superlink" else None
        for silo in self.silos:
            if role == f"node:{silo.name}":
                main_proc = silo.proc
        main, tree = 0, 0
        for pid, _ in self._tagged(role):
            rss = vmrss_kib(pid)
            tree += rss
            if main_proc is not None and pid == main_proc.pid:
                main = rss
        return {"main": main, "tree": tree}

    def received(self, silo: SiloNode, kind: str = "train") -> int:
        """How many ``kind`` messages the silo's SuperNode has received so far."""
        return _tail(silo.log, 10**9).count(f"Receiving: {kind} message")

    # -- processes ---------------------------------------------------------------------

    def _spawn(
        self, role: str, cmd: list[str], env: dict[str, str], log: Path, cwd: Path
    ) -> subprocess.Popen[bytes]:
        full = self._env(role, env)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            return subprocess.Popen(
                cmd, env=full, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _cli_env(self) -> dict[str, str]:
        return self._env("cli", {"FLWR_HOME": str(self.operator_home)})

    def _env(self, role: str, extra: dict[str, str]) -> dict[str, str]:
        """The environment of a process of ``role``: this Python's tools first on PATH
        (Flower starts flower-superexec and flwr-* by name), no runtime installs, no
        update checks, no inherited fedsilo key, and this deployment's tag."""
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            TAG: f"{self.id}:{role}",
            **extra,
        }
        for name in ("FEDSILO_KEY", "FEDSILO_PASSPHRASE"):
            env.pop(name, None)
        return env

    def _tagged(self, role: str) -> list[tuple[int, str]]:
        """Processes carrying this deployment's tag whose role starts with ``role``."""
        prefix = f"{TAG}={self.id}:{role}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            for item in environ.split(b"\0"):
                if item.startswith(prefix):
                    found.append((int(entry.name), item.split(b"=", 1)[1].decode()))
                    break
        return found

    def _signal_role(self, role: str, sig: int) -> None:
        for pid, _ in self._tagged(role):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _wait_log(
        self,
        log: Path,
        offset: int,
        text: str,
        proc: subprocess.Popen[bytes],
        timeout: float,
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if log.exists() and text in log.read_bytes()[offset:].decode(errors="replace"):
                return
            if proc.poll() is not None:
                raise DeploymentError(f"{log.name}: exited with {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"{log.name}: no {text!r} within {timeout:g}s:\n{_tail(log)}")
            time.sleep(0.2)


def wait_until(predicate: Any, *, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``predicate()`` until it returns something truthy, at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DeploymentError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _json_in(text: str) -> dict[str, Any]:
    start = text.find("{")
    if start < 0:
        raise DeploymentError(f"no JSON in flwr output:\n{text}")
    return json.loads(text[start:])


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def vmrss_kib(pid: int) -> int:
    """Resident memory of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.deploy_local", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--silos", type=int, default=2)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--partitioner", default="iid")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--run-config", default="", help='more settings: "k=v k2=v2"')
    parser.add_argument(
        "--attack",
        action="append",
        default=[],
        metavar="SILO=ATTACK",
        help="make silo number SILO misbehave, e.g. 1=nan or 0=scale:10 (repeatable)",
    )
    parser.add_argument(
        "--base",
        default="",
        help="folder for everything, kept (default: a temporary folder, removed at the end)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder and say where it is"
    )
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    from flwr.common.config import parse_config_args

    # SIGTERM (a service manager, `kill`) stops every process, as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    temporary = not args.base
    base = Path(args.base or tempfile.mkdtemp(prefix="fedsilo-deploy-"))
    extra = parse_config_args([args.run_config]) if args.run_config else {}
    attacks = {int(a.split("=", 1)[0]): {"attack": a.split("=", 1)[1]} for a in args.attack}
    print(f"deployment folder: {base}", flush=True)
    try:
        with LocalDeployment(
            base,
            silos=args.silos,
            dataset=args.dataset,
            partitioner=args.partitioner,
            alpha=args.alpha,
            node_config=attacks,
            run_config={"num-server-rounds": args.rounds, **extra},
        ) as deployment:
            print(f"SuperLink on 127.0.0.1:{deployment.port} (TLS, SuperNode authentication)")
            for silo in deployment.silos:
                print(f"  {silo.name}: node {silo.node_id}, data {silo.node_config['data-path']}")
            run = deployment.run(timeout=args.timeout)
            sys.stdout.write(run.output)
            print(final_result(run))
            return run.returncode or 0
    finally:
        if temporary and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
            print(f"removed {base} (--keep or --base keeps it)")
        else:
            print(f"outputs, keys and logs kept in {base}")


def final_result(run: DeployedRun) -> str:
    """One line: how the run ended and the best model's validation accuracy."""
    try:
        summary = run.summary
    except (DeploymentError, OSError, ValueError):
        return f"no summary: the run exited with {run.returncode}"
    best = summary.get("best_metrics") or {}
    accuracy = best.get("val_accuracy")
    shown = "-" if accuracy is None else f"{accuracy:.4f}"
    return (
        f"final: {summary.get('stop_reason')}, best round {summary.get('best_round')}, "
        f"val_accuracy {shown}"
    )


if __name__ == "__main__":
    sys.exit(main())
