"""What ``fl-server`` and ``fl-client`` share: subcommands, errors, output, progress,
the data-source and key flags.

Contract of every command (scripts and docs rely on it):

- exit 0 on success; exit 2 on bad usage or bad input with ONE line ``error: ...`` on
  stderr and no traceback (``--debug`` shows it); exit 1 only for a bug;
- human-readable text on stdout, or one JSON document with ``--json``;
- progress bars and warnings only on stderr, so ``--json`` output stays clean;
- keys from ``--key-file``, else ``FEDSILO_KEY``, ``FEDSILO_PASSPHRASE``, the default key
  file (:func:`privacy.keys.resolve_key`); data from ``--data FILE --schema FILE`` or
  ``--dataset NAME``; training settings as ``--set key=value``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from core_training.config import ConfigError
from core_training.data import BUILTIN_DATASETS, Table, load_table
from core_training.schema import DataError, Schema, schema_difference
from fl_common.jsonio import jsonable

Handler = Callable[[argparse.Namespace], dict[str, Any]]
Render = Callable[[dict[str, Any]], str]

# Library warnings that say nothing to a CLI user (Opacus's notes on its noise source
# and accountant, torch's on hooks and quantization); the rest is shown on one line.
QUIET_WARNINGS = (
    "Secure RNG turned off",
    "Optimal order is the largest alpha",
    "Full backward hook is firing",
    "torch.ao.quantization",
    "torch.quantize_per_tensor",  # loading an int8 export
    "TypedStorage is deprecated",
)


_INPUT_ERRORS = (
    ("privacy.crypto", "DecryptionError"),  # wrong key, tampered or foreign file
    ("privacy.keys", "KeyNotFoundError"),
    ("privacy.ledger", "BudgetExhaustedError"),
)


class CLIError(Exception):
    """Bad usage or bad input: exit 2 with ``error: <message>`` (and ``details``, one per
    line, where several problems must all be shown)."""

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = list(details)


def arg(*names: str, **options: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One ``add_argument`` call, declared ahead (see :class:`Command`)."""
    return names, options


@dataclass
class Command:
    """A subcommand: ``run(args)`` returns a JSON-able dict; ``render`` turns it into text.

    ``key``, ``data`` (``"required"``, ``"optional"`` or None) and ``settings`` add the
    common flags, so they are spelled the same in every command. ``verdict(result)``,
    where given, returns the one-line error of a result that is a failure (exit 2 after
    the result is printed, so a report still shows why), or None.
    """

    name: str
    help: str
    example: str
    run: Handler
    render: Render
    args: list[tuple[tuple[str, ...], dict[str, Any]]] = field(default_factory=list)
    key: bool = False
    data: str | None = None
    settings: bool = False
    verdict: Callable[[dict[str, Any]], str | None] | None = None


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def build_parser(prog: str, description: str, commands: Sequence[Command]) -> Parser:
    parser = Parser(prog=prog, description=description)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subs.required = True
    for cmd in commands:
        sub = subs.add_parser(
            cmd.name,
            help=cmd.help,
            description=cmd.help[:1].upper() + cmd.help[1:] + ".",
            epilog="example:\n  " + cmd.example.replace("\n", "\n  "),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for names, options in cmd.args:
            sub.add_argument(*names, **options)
        if cmd.data:
            _add_data_args(sub, required=cmd.data == "required")
        if cmd.settings:
            sub.add_argument(
                "--set",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="a training setting (docs/simulation.md), e.g. --set local-epochs=2",
            )
        if cmd.key:
            sub.add_argument(
                "--key-file",
                metavar="K",
                help="key file; default: FEDSILO_KEY, FEDSILO_PASSPHRASE, $FEDSILO_HOME/key",
            )
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")
        sub.add_argument("--debug", action="store_true", help="show tracebacks")
        sub.set_defaults(_command=cmd)
    return parser


def make_main(
    prog: str, description: str, commands: Sequence[Command]
) -> Callable[[Sequence[str] | None], int]:
    """The ``main(argv=None) -> exit status`` of a console script."""

    def main(argv: Sequence[str] | None = None) -> int:
        return run_cli(build_parser(prog, description, commands), argv)

    return main


def run_cli(parser: Parser, argv: Sequence[str] | None = None) -> int:
    """Parse, run one command, print its result; the exit status is returned."""
    args = parser.parse_args(argv)
    cmd: Command = args._command
    debug = bool(args.debug)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        if not debug:
            for text in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=f".*{text}")
        try:
            result = cmd.run(args)
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            return 130
        except Exception as exc:
            status, line, details = _classify(exc)
            if debug:
                traceback.print_exc()
            if status == 1 and not debug:
                line = f"internal error: {line} (rerun with --debug for the traceback)"
            sys.stderr.write(f"error: {line}\n")
            for detail in details:
                sys.stderr.write(f"  {detail}\n")
            return status
    sys.stdout.write((to_json(result) if args.json else cmd.render(result)).rstrip("\n") + "\n")
    failure = cmd.verdict(result) if cmd.verdict else None
    if failure:
        sys.stderr.write(f"error: {one_line(failure)}\n")
        return 2
    return 0


def _classify(exc: Exception) -> tuple[int, str, list[str]]:
    """Exit status, one-line message and detail lines for an exception."""
    if isinstance(exc, CLIError):
        return 2, one_line(str(exc)), exc.details
    if isinstance(exc, DataError) and getattr(exc, "problems", None):
        problems: list[str] = exc.problems  # type: ignore[attr-defined]
        head = str(exc).split("\n", 1)[0]
        more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
        return 2, f"{head} {problems[0]}{more} (fl-client check-data lists them all)", []
    # ValueError covers DataError, ConfigError and the key and ledger errors; OSError
    # missing files, permissions and refusals to overwrite. The privacy errors are looked
    # up only where their module is loaded (importing privacy.ledger costs Opacus).
    expected: list[type[BaseException]] = [ValueError, OSError]
    for module, name in _INPUT_ERRORS:
        if module in sys.modules:
            expected.append(getattr(sys.modules[module], name))
    if isinstance(exc, tuple(expected)):
        text = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
            text = f"{exc.filename}: {text}"
        return 2, one_line(text), []
    return 1, one_line(f"{type(exc).__name__}: {exc}"), []


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    sys.stderr.write(f"warning: {one_line(str(message))}\n")


# -- output ----------------------------------------------------------------------------


def to_json(value: Any) -> str:
    return json.dumps(jsonable(value), indent=2)


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain fixed-width table; numbers right-aligned, floats with 4 decimals."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row, raw in zip(cells, rows, strict=True):
        parts = [
            c.rjust(w) if isinstance(v, (int, float)) else c.ljust(w)
            for c, v, w in zip(row, raw, widths, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "-"
    return str(value)


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """``name  value`` lines, names padded to one width."""
    pairs = [(k, v) for k, v in pairs if v is not None]
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in pairs)


def metrics_text(metrics: dict[str, Any], class_names: Sequence[Any]) -> str:
    """Evaluation metrics (``core_training.trainer.evaluate``) with per-class recall."""
    head = fields(
        (k, metrics.get(k)) for k in ("loss", "accuracy", "balanced_accuracy", "macro_f1")
    )
    recall = metrics.get("per_class_recall") or []
    rows = [[str(c), float(r)] for c, r in zip(class_names, recall, strict=False)]
    return head + "\nper-class recall:\n" + table(rows, ["class", "recall"])


# -- progress --------------------------------------------------------------------------


class Progress:
    """A one-line bar on stderr, drawn only when stderr is a terminal (so logs, pipes and
    ``--json`` consumers never see it)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total, self.label, self.done = max(int(total), 0), label, 0
        self.stream = stream or sys.stderr
        self.enabled = self.total > 0 and self.stream.isatty()
        self._started = time.monotonic()
        self.note = ""

    def advance(self, steps: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + steps)
        self.note = note or self.note
        if self.enabled:
            width = 24
            filled = round(width * self.done / self.total)
            bar = "#" * filled + "." * (width - filled)
            elapsed = time.monotonic() - self._started
            self.stream.write(
                f"\r{self.label} [{bar}] {self.done}/{self.total} {elapsed:.0f}s {self.note}\x1b[K"
            )
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(items: Sequence[Any], label: str) -> Iterator[Any]:
    """Iterate ``items`` with a :class:`Progress` bar."""
    with Progress(len(items), label) as bar:
        for item in items:
            yield item
            bar.advance()


# -- common flags ----------------------------------------------------------------------


def _add_data_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_argument_group(
        "data" if required else "data (optional)",
        "a CSV/NPZ file with its schema, or a built-in set",
    )
    group.add_argument("--data", metavar="FILE", help="CSV or NPZ file (with --schema)")
    group.add_argument("--schema", metavar="FILE", help="schema TOML of the data")
    group.add_argument("--dataset", choices=BUILTIN_DATASETS, help="a built-in data set")
    parser.set_defaults(_data_required=required)


def load_data(args: argparse.Namespace) -> Table | None:
    """The table named by ``--data/--schema`` or ``--dataset`` (None when optional and
    absent)."""
    if args.data and args.dataset:
        raise CLIError("give --data FILE --schema FILE or --dataset NAME, not both")
    if args.dataset:
        return load_table(args.dataset)
    if args.data:
        if not args.schema:
            raise CLIError(f"--data {args.data} needs --schema FILE (the data contract)")
        return load_table(args.data, args.schema)
    if args._data_required:
        raise CLIError("no data: give --data FILE --schema FILE or --dataset NAME")
    return None


def key_from(args: argparse.Namespace) -> bytes:
    """The key, exactly as every fedsilo component resolves it."""
    from privacy.keys import resolve_key

    return resolve_key(args.key_file)


def settings_from(items: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` pairs. A value is typed like the training setting it names
    (text stays text: ``hidden-sizes=64`` is the string "64"), else as int, float,
    bool or text."""
    from core_training.config import TrainConfig

    defaults = TrainConfig().to_dict()
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name:
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set local-epochs=2")
        is_text = isinstance(defaults.get(name.replace("_", "-")), str)
        out[name] = text.strip("\"'") if is_text else _typed(text)
    return out


def _typed(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text.strip("\"'")


def ledger_summary(path: Path, key: bytes) -> dict[str, Any]:
    """A silo's privacy ledger as its last write left it: budget, spent and remaining
    epsilon, rounds, entries. The ledger stores its spent epsilon (recomputed from the
    whole history) in the file's metadata on every change, so reading it needs no
    accountant (and no Opacus import); the payload is JSON, nothing is unpickled."""
    from privacy import store

    try:
        record, meta = store.load_json(path, key=key, kind="ledger")
    except store.ArtifactNotFoundError:
        raise CLIError(
            f"no privacy ledger at {path} yet: the silo's first fl-client train --dp makes it"
        ) from None
    if not isinstance(record, dict) or record.get("format") != LEDGER_FORMAT:
        raise CLIError(f"{path} is not a privacy ledger")
    entries = record["entries"]
    budget, spent = float(record["budget_epsilon"]), float(meta["spent_epsilon"])
    return {
        "path": str(path),
        "budget_epsilon": budget,
        "delta": float(record["delta"]),
        "spent_epsilon": spent,
        "remaining_epsilon": max(0.0, budget - spent),
        "rounds_recorded": sum(1 for e in entries if e["steps"] > 0),
        "pending_reservations": sum(1 for e in entries if e["status"] == "reserved"),
        "entries": entries,
    }


LEDGER_FORMAT = "fedsilo-privacy-ledger"  # privacy.ledger.LEDGER_FORMAT (that module loads Opacus)


def check_schema(got: Schema, want: Schema | None, what: str) -> None:
    """Refuse data whose schema is not the model's (exit 2, saying what differs)."""
    if want is not None and (diff := schema_difference(got, want)):
        raise CLIError(f"{what}: the data's schema differs from the model's: {diff}")
