"""A silo's privacy spending across rounds and runs, kept encrypted on disk.

The ledger stores what happened, not a running total: one entry per local training with
its noise multiplier, sample rate and steps (plus run, round, label and timestamps).
Epsilon is always recomputed from the composition of every entry, by the accountant the
ledger is opened with (RDP, or PRV: tighter), so it is never a sum of per-round epsilons
(too pessimistic) and never reset between rounds or runs (wrong). The history does not
depend on the accountant: a ledger written under one reads under the other.

A round goes: :meth:`PrivacyLedger.reserve` checks the planned steps against the budget
(refusing with :class:`BudgetExhaustedError` before anything is recorded) and persists a
*reservation* that already counts as spent; after training, :meth:`Reservation.settle`
replaces the planned steps by the steps actually taken. A crash in between leaves the
reservation on disk, counted at its planned steps, so a crash never under-counts.

Budget changes: a smaller budget given at open is always adopted (it is only stricter).
A larger one is refused unless ``allow_budget_increase=True``, which is recorded with its
time in ``budget_changes``. The delta cannot change: epsilons at two deltas do not compare.
The budget is the silo's alone: fedsilo opens a ledger with the budget of the silo's
policy, never with a number a server sent. :meth:`PrivacyLedger.restrict` lowers, for one
process only, what the total and the run's own entries may reach.

Several processes of one silo may use one ledger at once (in a deployment every message
starts a ClientApp process): opening, reserving and settling hold an exclusive lock on
``<ledger>.lock`` and re-read the file under it, so no process overwrites another's entry.
"""

from __future__ import annotations

import fcntl
import math
import secrets
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import store
from ._fsio import ArtifactNotFoundError
from .dp import ACCOUNTANT, ACCOUNTANTS, DPPlan, account

LEDGER_FORMAT = "fedsilo-privacy-ledger"
LEDGER_VERSION = 1
RESERVED = "reserved"
SETTLED = "settled"


class BudgetExhaustedError(RuntimeError):
    """Training would take epsilon past the budget; nothing was spent."""

    def __init__(
        self,
        *,
        spent: float,
        budget: float,
        projected: float,
        delta: float,
        scope: str = "the budget",
    ) -> None:
        self.spent, self.budget, self.projected, self.delta = spent, budget, projected, delta
        self.scope = scope
        super().__init__(
            f"privacy budget exhausted: this round would bring epsilon from {spent:.4g} to "
            f"{projected:.4g}, over {scope} of {budget:.4g} (delta={delta:g}). Training "
            f"was refused and nothing was spent. Use fewer steps or more noise, or stop."
        )


class LedgerMismatchError(ValueError):
    """The ledger on disk was kept under other terms (delta, budget) than asked for."""


@dataclass(frozen=True)
class LedgerEntry:
    """One local training: what the accountant needs, plus where and when."""

    id: str
    run: str
    round: int | None
    label: str
    noise_multiplier: float
    sample_rate: float
    planned_steps: int
    steps: int  # counted steps: planned while reserved, taken once settled
    status: str
    reserved_at: str
    settled_at: str | None = None


class PrivacyLedger:
    """Open with :meth:`open`; every change is written to disk before it returns."""

    def __init__(
        self, path: Path, key: bytes, record: dict[str, Any], run: str, accountant: str = ACCOUNTANT
    ) -> None:
        self.path = path
        self.accountant = accountant  # how this process composes the history
        self._key = key
        self._record = record
        self.run = run
        self._total_cap = math.inf  # restrict(): this process's limits, never stored
        self._run_cap = math.inf

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        key: bytes,
        budget_epsilon: float,
        delta: float,
        run: str | None = None,
        allow_budget_increase: bool = False,
        accountant: str = ACCOUNTANT,
    ) -> PrivacyLedger:
        """Load the ledger at ``path`` or create it. ``run`` labels this process's entries
        (default: a fresh id). ``accountant`` ("rdp" or "prv") composes the stored history
        of mechanisms in this process; any ledger can be read with either."""
        if accountant not in ACCOUNTANTS:
            raise ValueError(
                f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}"
            )
        if not budget_epsilon > 0 or not math.isfinite(budget_epsilon):
            raise ValueError(f"budget_epsilon must be a positive number, got {budget_epsilon}")
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        path = Path(path)
        run = run or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
        with _file_lock(path):
            ledger = cls._open_locked(path, key, budget_epsilon, delta, run, allow_budget_increase)
        ledger.accountant = accountant
        return ledger

    @classmethod
    def _open_locked(
        cls,
        path: Path,
        key: bytes,
        budget_epsilon: float,
        delta: float,
        run: str,
        allow_budget_increase: bool,
    ) -> PrivacyLedger:
        try:
            record, _ = store.load_json(path, key=key, kind="ledger")
        except ArtifactNotFoundError:
            record = {
                "format": LEDGER_FORMAT,
                "version": LEDGER_VERSION,
                "accountant": "rdp",
                "delta": delta,
                "budget_epsilon": budget_epsilon,
                "created": _now(),
                "budget_changes": [],
                "entries": [],
            }
            ledger = cls(path, key, record, run)
            ledger._save()
            return ledger
        if not isinstance(record, dict) or record.get("format") != LEDGER_FORMAT:
            raise store.ArtifactFormatError(f"{path} is not a privacy ledger")
        if record["delta"] != delta:
            raise LedgerMismatchError(
                f"the ledger {path} counts epsilon at delta={record['delta']:g}, not {delta:g}; "
                f"epsilons at different deltas cannot be combined. Use delta={record['delta']:g} "
                f"or a new ledger for a new data set."
            )
        ledger = cls(path, key, record, run)
        stored = record["budget_epsilon"]
        if budget_epsilon > stored and not allow_budget_increase:
            raise LedgerMismatchError(
                f"the ledger {path} has a budget of epsilon={stored:g}; raising it to "
                f"{budget_epsilon:g} needs allow_budget_increase=True (it is recorded)."
            )
        if budget_epsilon != stored:
            record["budget_changes"].append(
                {"at": _now(), "from": stored, "to": budget_epsilon, "run": run}
            )
            record["budget_epsilon"] = budget_epsilon
            ledger._save()
        return ledger

    def restrict(self, *, total: float | None = None, run: float | None = None) -> None:
        """Limits for this process only: the recorded total may not pass ``total`` and
        this run's own entries may not compose past ``run`` (the budget stays stored)."""
        for name, value in (("total", total), ("run", run)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} limit must be a positive number, got {value}")
        if total is not None:
            self._total_cap = float(total)
        if run is not None:
            self._run_cap = float(run)

    # --- reading ------------------------------------------------------------------------

    @property
    def budget_epsilon(self) -> float:
        return float(self._record["budget_epsilon"])

    @property
    def delta(self) -> float:
        return float(self._record["delta"])

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(LedgerEntry(**e) for e in self._record["entries"])

    @property
    def rounds_recorded(self) -> int:
        """Entries that took or may have taken steps (settled or still reserved)."""
        return sum(1 for e in self._record["entries"] if e["steps"] > 0)

    def spent_epsilon(self) -> float:
        """Epsilon of everything recorded, reservations counted at their planned steps."""
        return self._epsilon(self._history())

    def spent(self) -> tuple[float, str]:
        """(spent epsilon, the accountant that produced it): ``accountant`` "prv" answers
        with "rdp" for histories of many distinct mechanisms (``dp.PRV_MAX_MECHANISMS``)."""
        return account(self._history(), delta=self.delta, accountant=self.accountant)

    def remaining(self) -> float:
        """Budget minus spent epsilon (not additive: use :meth:`check` to plan a round)."""
        return max(0.0, self.budget_epsilon - self.spent_epsilon())

    def projected_epsilon(
        self, *, noise_multiplier: float, sample_rate: float, steps: int
    ) -> float:
        """Epsilon if a training of ``steps`` steps at (sigma, q) were added now."""
        return self._epsilon([*self._history(), (noise_multiplier, sample_rate, steps)])

    def run_epsilon(self) -> float:
        """Epsilon of this run's own entries (those labelled with :attr:`run`)."""
        return self._epsilon(self._history(run=self.run))

    def check(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """The projected epsilon, or :class:`BudgetExhaustedError` if it exceeds the budget
        (or a limit set with :meth:`restrict`)."""
        new = (noise_multiplier, sample_rate, steps)
        projected = self._epsilon([*self._history(), new])
        limit = min(self.budget_epsilon, self._total_cap)
        if projected > limit:
            raise BudgetExhaustedError(
                spent=self.spent_epsilon(),
                budget=limit,
                projected=projected,
                delta=self.delta,
                scope="the budget" if limit == self.budget_epsilon else "this run's budget",
            )
        if math.isfinite(self._run_cap):
            history = [*self._history(run=self.run), new]
            run_projected = self._epsilon(history)
            if run_projected > self._run_cap:
                raise BudgetExhaustedError(
                    spent=self.run_epsilon(),
                    budget=self._run_cap,
                    projected=run_projected,
                    delta=self.delta,
                    scope="this run's epsilon limit",
                )
        return projected

    def max_steps(self, *, noise_multiplier: float, sample_rate: float) -> int:
        """The most steps at (sigma, q) that still fit the budget (0 if none)."""

        def fits(steps: int) -> bool:
            return (
                self.projected_epsilon(
                    noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps
                )
                <= self.budget_epsilon
            )

        if not fits(1):
            return 0
        low, high = 1, 2
        while fits(high):
            low, high = high, high * 2
            if high > 1 << 40:
                return low
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if fits(mid) else (low, mid)
        return low

    # --- spending -----------------------------------------------------------------------

    def reserve(
        self,
        *,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
        round: int | None = None,
        label: str = "",
    ) -> Reservation:
        """Check the budget, then persist a reservation of ``steps`` steps that counts as
        spent until settled. Refused (nothing recorded) with :class:`BudgetExhaustedError`."""
        if steps < 1:
            raise ValueError(f"a reservation needs at least one step, got {steps}")
        with self._locked():
            return self._reserve_locked(noise_multiplier, sample_rate, steps, round, label)

    def _reserve_locked(
        self, noise_multiplier: float, sample_rate: float, steps: int, round: int | None, label: str
    ) -> Reservation:
        self.check(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        entry = LedgerEntry(
            id=secrets.token_hex(8),
            run=self.run,
            round=round,
            label=label,
            noise_multiplier=float(noise_multiplier),
            sample_rate=float(sample_rate),
            planned_steps=int(steps),
            steps=int(steps),
            status=RESERVED,
            reserved_at=_now(),
        )
        self._record["entries"].append(asdict(entry))
        try:
            self._save()
        except BaseException:
            self._record["entries"].pop()
            raise
        return Reservation(self, entry.id)

    def reserve_plan(
        self, plan: DPPlan, *, round: int | None = None, label: str = ""
    ) -> Reservation:
        """:meth:`reserve` for a :class:`~privacy.dp.DPPlan` (checks its delta too)."""
        if plan.delta != self.delta:
            raise LedgerMismatchError(f"plan delta {plan.delta:g} != ledger delta {self.delta:g}")
        return self.reserve(
            noise_multiplier=plan.noise_multiplier,
            sample_rate=plan.sample_rate,
            steps=plan.steps,
            round=round,
            label=label,
        )

    def settle(self, reservation_id: str, steps_taken: int) -> LedgerEntry:
        """Replace a reservation's planned steps by the steps actually taken."""
        with self._locked():
            return self._settle_locked(reservation_id, steps_taken)

    def _settle_locked(self, reservation_id: str, steps_taken: int) -> LedgerEntry:
        entries = self._record["entries"]
        index = next((i for i, e in enumerate(entries) if e["id"] == reservation_id), None)
        if index is None:
            raise KeyError(f"no reservation {reservation_id} in {self.path}")
        old = LedgerEntry(**entries[index])
        if old.status != RESERVED:
            raise ValueError(f"reservation {reservation_id} is already settled")
        if steps_taken < 0:
            raise ValueError(f"steps_taken must be >= 0, got {steps_taken}")
        if steps_taken > old.planned_steps:
            # Recorded all the same: the steps happened, and the ledger must not under-count.
            warnings.warn(
                f"{steps_taken} steps were taken against a reservation of "
                f"{old.planned_steps}; the ledger records them all",
                stacklevel=2,
            )
        new = replace(old, steps=int(steps_taken), status=SETTLED, settled_at=_now())
        entries[index] = asdict(new)
        try:
            self._save()
        except BaseException:
            entries[index] = asdict(old)
            raise
        return new

    def pending(self) -> tuple[LedgerEntry, ...]:
        """Reservations never settled (e.g. after a crash); they count at planned steps."""
        return tuple(e for e in self.entries if e.status == RESERVED)

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers for a report or a metrics record."""
        spent, accountant = self.spent()
        return {
            "budget_epsilon": self.budget_epsilon,
            "delta": self.delta,
            "spent_epsilon": spent,
            "accountant": accountant,
            "rounds_recorded": self.rounds_recorded,
            "pending_reservations": len(self.pending()),
        }

    # --- internals ----------------------------------------------------------------------

    def _epsilon(self, history: list[tuple[float, float, int]]) -> float:
        return account(history, delta=self.delta, accountant=self.accountant)[0]

    def _history(self, run: str | None = None) -> list[tuple[float, float, int]]:
        return [
            (e["noise_multiplier"], e["sample_rate"], e["steps"])
            for e in self._record["entries"]
            if e["steps"] > 0 and (run is None or e["run"] == run)
        ]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the ledger's lock and work on what is on disk now, not on what this
        process read earlier (another process of the silo may have added entries)."""
        with _file_lock(self.path):
            record, _ = store.load_json(self.path, key=self._key, kind="ledger")
            if not isinstance(record, dict) or record.get("format") != LEDGER_FORMAT:
                raise store.ArtifactFormatError(f"{self.path} is not a privacy ledger")
            self._record = record
            yield

    def _save(self) -> None:
        spent, accountant = self.spent()
        metadata = {
            "budget_epsilon": self.budget_epsilon,
            "delta": self.delta,
            "spent_epsilon": spent,
            "accountant": accountant,
            "entries": len(self._record["entries"]),
        }
        store.save_json(self.path, self._record, key=self._key, kind="ledger", metadata=metadata)


class Reservation:
    """A persisted reservation; settle it with the steps actually taken.

    As a context manager it settles nothing by itself: leaving the block without
    :meth:`settle` (an exception, a forgotten call) keeps the planned steps counted."""

    def __init__(self, ledger: PrivacyLedger, entry_id: str) -> None:
        self.ledger = ledger
        self.id = entry_id
        self.settled: LedgerEntry | None = None

    def settle(self, steps_taken: int) -> LedgerEntry:
        self.settled = self.ledger.settle(self.id, steps_taken)
        return self.settled

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and self.settled is None:
            warnings.warn(
                f"reservation {self.id} left unsettled: its planned steps stay counted",
                stacklevel=2,
            )


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``<path>.lock`` (created beside the ledger)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
