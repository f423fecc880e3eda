"""Run a guide's shell sessions as written and compare what they print.

The convention the guides follow (docs/cli.md, docs/deployment.md):

- Every ```console block is run, in order, in one bash session (so ``cd`` and variables
  carry over), unless the line before its fence is ``<!-- not run -->``.
- A command starts with ``$ ``; it goes on over lines ending in ``\\`` and over the body
  of a here-document (``<<'EOF'`` ... ``EOF``). Every other line is the output the reader
  should see.
- Every command must exit 0, unless the next command is ``echo $?``, which prints the
  status (compared exactly).
- Output is compared line by line, with runs of blanks collapsed and every number, hex id
  and time stamp free to differ. A line ``...`` stands for lines left out; the lines
  between two ``...`` must appear together, in order.
- ``export NAME=VALUE`` sets a value the test may replace (the working folder ``W``, a
  port ``PORT`` or any ``...PORT``, the project folder ``SRC``); the shown output is
  compared with the test's value in place of the guide's.

Every process a guide starts, in the foreground or with ``&``, carries an environment
variable with this run's tag; :meth:`GuideSession.close` stops all of them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

NOT_RUN = "<!-- not run -->"
TAG = "FEDSILO_GUIDE_RUN"
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
_HEX = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{8,}\b")
_NUM = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Command:
    text: str
    expected: list[str] = field(default_factory=list)
    line: int = 0  # where it starts in the guide (1-based)


def commands(markdown: str) -> list[Command]:
    """The commands of a guide's runnable console blocks, with their shown output."""
    out: list[Command] = []
    lines = markdown.splitlines()
    i, previous = 0, ""
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```console"):
            skip = previous.strip() == NOT_RUN
            i += 1
            current: Command | None = None
            while i < len(lines) and not lines[i].strip().startswith("```"):
                text = lines[i]
                if text.startswith("$ "):
                    current = Command(text[2:], line=i + 1)
                    if not skip:
                        out.append(current)
                    while current.text.endswith("\\") and i + 1 < len(lines):
                        i += 1
                        current.text += "\n" + lines[i]
                    heredoc = _HEREDOC.search(current.text)
                    if heredoc:
                        while i + 1 < len(lines):
                            i += 1
                            current.text += "\n" + lines[i]
                            if lines[i].strip() == heredoc.group(2):
                                break
                elif current is not None:
                    current.expected.append(text)
                i += 1
        if line.strip():
            previous = line
        i += 1
    return out


def normalize(line: str) -> str:
    line = _HEX.sub("<h>", _ANSI.sub("", line).strip())
    if line.isdigit():  # a bare status from `echo $?`: exact
        return line
    return " ".join(_NUM.sub("<n>", line).split())


def mismatch(expected: list[str], actual: str) -> str | None:
    """None when the shown output appears in ``actual``; else what is missing."""
    got = [normalize(x) for x in actual.splitlines()]
    chunks: list[list[str]] = [[]]
    for line in expected:
        if line.strip() == "...":
            chunks.append([])
        elif line.strip():
            chunks[-1].append(normalize(line))
    got = [g for g in got if g]
    pos = 0
    for chunk in filter(None, chunks):
        for start in range(pos, len(got) - len(chunk) + 1):
            if got[start : start + len(chunk)] == chunk:
                pos = start + len(chunk)
                break
        else:
            return "\n".join(chunk)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GuideSession:
    """One bash session in ``folder`` with a fresh HOME; runs commands one by one."""

    def __init__(self, folder: Path, env: dict[str, str], overrides: dict[str, str]) -> None:
        self.folder = folder
        self.overrides = overrides
        self.replacements: dict[str, str] = {}
        self.tag = uuid.uuid4().hex
        self.count = 0
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=folder,
            env={**env, TAG: self.tag},
            text=True,
            start_new_session=True,
        )

    def substitute(self, text: str) -> str:
        if not text.startswith("export "):
            return text
        for match in re.finditer(r"\b(\w+)=(\S+)", text.splitlines()[0]):
            name, shown = match.groups()
            value = self.overrides.get(name)
            if value is None and name.endswith("PORT"):
                value = str(free_port())
            if value is not None:
                self.replacements[shown] = value
                text = text.replace(match.group(0), f"{name}={value}", 1)
        return text

    def expected(self, lines: list[str]) -> list[str]:
        out = []
        for line in lines:
            for old, new in sorted(self.replacements.items(), key=lambda kv: -len(kv[0])):
                line = line.replace(old, new)
            out.append(line)
        return out

    def run(self, command: str, *, timeout: float) -> tuple[int, str]:
        """Run one command in the session; its exit status and output (stdout+stderr)."""
        self.count += 1
        out = self.folder.parent / f"cmd-{self.count}.out"
        rc = self.folder.parent / f"cmd-{self.count}.rc"
        script = (
            f"{{\n{command}\n}} > {out} 2>&1 < /dev/null\n"
            f"__rc=$?; echo $__rc > {rc}.tmp; mv {rc}.tmp {rc}; (exit $__rc)\n"
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(script)
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while not rc.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the shell exited ({self.proc.returncode})")
            if time.monotonic() > deadline:
                self.close(grace=0)
                text = out.read_text(errors="replace") if out.exists() else ""
                raise TimeoutError(f"no end within {timeout:g}s; output so far:\n{text[-4000:]}")
            time.sleep(0.2)
        return int(rc.read_text()), out.read_text(errors="replace")

    def tagged(self) -> list[int]:
        """Processes still running that this session started (directly or not)."""
        mark = f"{TAG}={self.tag}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
        return found

    def close(self, *, grace: float = 30) -> list[str]:
        """Stop every process of this session. Returns the ones (pid and command line)
        still running ``grace`` seconds after the guide's last command: processes the
        guide started and did not stop (a SuperExec or ClientApp may take a few seconds
        to exit after its SuperNode or SuperLink has)."""
        deadline = time.monotonic() + grace
        while [p for p in self.tagged() if p != self.proc.pid] and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [_describe(p) for p in self.tagged() if p != self.proc.pid]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.tagged():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while self.tagged() and time.monotonic() < deadline:
                time.sleep(0.2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        return left


def _describe(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return str(pid)
    return f"{pid} {cmdline.decode(errors='replace')[:200]}"
