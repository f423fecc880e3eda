"""A silo's own privacy policy: what it allows any run to do with its data.

The policy is a TOML file on the silo, read only from the silo's own configuration
(node-config ``policy``, ``fl-client --policy`` or ``$FEDSILO_HOME/policy.toml``); the
server never names it. A run's settings are a *request*: :func:`decide` turns a request
into the terms this silo trains under, which may only be stricter than the policy, or
raises :class:`PolicyDeclined` naming the policy key the request would break.

Every key is optional; absent keys take :func:`SiloPolicy.defaults`, which require DP for
a deployed silo. A simulated silo (one researcher playing every party) defaults to
``require-dp = false`` and a per-run epsilon up to its budget.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

POLICY_FILE = "policy.toml"
SHARE_MODES = ("exact", "dp", "none")
ACCOUNTANTS = ("prv", "rdp")  # privacy.dp.ACCOUNTANTS (not imported: it loads Opacus)
# The key of a refusal because no noise level meets the run's target-epsilon on this
# silo's rows (not a policy key: the run asks for something DP-SGD cannot give here).
TARGET_UNREACHABLE = "dp-target-unreachable"


class PolicyError(ValueError):
    """The policy file cannot be used; the message names the file and the key."""


class PolicyDeclined(Exception):
    """A run asks for less protection than the silo's policy allows."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"declined by the silo's policy ({key}): {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class PrivacyTerms:
    require_dp: bool = True
    max_epsilon_per_run: float = 4.0
    budget: float = 10.0
    delta: float = 1e-5
    min_noise_multiplier: float = 0.0
    accountant: str = "prv"  # composes the ledger: "prv" (tighter) or "rdp"


@dataclass(frozen=True)
class StatisticsTerms:
    share: str = "exact"
    histograms: bool = True
    epsilon: float = 1.0  # what a "dp" release of the statistics spends, once per run


@dataclass(frozen=True)
class EvaluationTerms:
    max_evaluations_per_run: int = 3


@dataclass(frozen=True)
class ResourceTerms:
    max_local_epochs: int = 20
    max_batch_size: int = 4096
    max_parameters: int = 20_000_000


@dataclass(frozen=True)
class SiloPolicy:
    """The parsed policy; ``source`` says where it came from (a path, or defaults)."""

    silo_id: str | None = None
    privacy: PrivacyTerms = field(default_factory=PrivacyTerms)
    statistics: StatisticsTerms = field(default_factory=StatisticsTerms)
    evaluation: EvaluationTerms = field(default_factory=EvaluationTerms)
    resources: ResourceTerms = field(default_factory=ResourceTerms)
    source: str = "built-in defaults"

    @classmethod
    def defaults(cls, *, simulated: bool = False) -> SiloPolicy:
        if not simulated:
            return cls()
        budget = PrivacyTerms().budget
        return cls(
            privacy=PrivacyTerms(require_dp=False, max_epsilon_per_run=budget),
            source="built-in defaults for simulated silos",
        )

    @classmethod
    def load(cls, path: str | Path, *, simulated: bool = False) -> SiloPolicy:
        path = Path(path).expanduser()
        if not path.is_file():
            raise PolicyError(f"policy file {path} does not exist; fix the path or remove it")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(f"policy file {path} is not valid TOML: {exc}") from None
        return _parse(raw, cls.defaults(simulated=simulated), str(path))

    def describe(self) -> str:
        """One line for the log: where the policy comes from and what it allows."""
        p, s = self.privacy, self.statistics
        return (
            f"silo policy from {self.source}: require-dp {str(p.require_dp).lower()}, "
            f"max-epsilon-per-run {p.max_epsilon_per_run:g}, budget {p.budget:g}, "
            f"delta {p.delta:g}, accountant {p.accountant}, statistics {s.share}"
        )


def find_policy(node_path: str | None, home: Path, *, simulated: bool) -> SiloPolicy:
    """The silo's policy: the file it names, else ``home/policy.toml``, else defaults."""
    if node_path:
        return SiloPolicy.load(node_path, simulated=simulated)
    local = home / POLICY_FILE
    if local.is_file():
        return SiloPolicy.load(local, simulated=simulated)
    return SiloPolicy.defaults(simulated=simulated)


# -- a run's request and the terms granted ---------------------------------------------


@dataclass(frozen=True)
class RunRequest:
    """What a run asks of a silo, from its run config (the server's word)."""

    dp: bool
    target_epsilon: float
    delta: float
    budget: float
    local_epochs: int
    batch_size: int
    median_imputation: bool = False
    num_parameters: int | None = None


@dataclass(frozen=True)
class Grant:
    """The terms a silo trains under for a run: never looser than its policy."""

    dp: bool
    target_epsilon: float  # what the run's noise is calibrated for
    delta: float  # the policy's: the ledger accounts at one delta
    budget: float  # the ledger's lifetime budget: the policy's, never the run's
    budget_cap: float  # the lifetime total this run may reach (a request may lower it)
    run_epsilon: float  # the most this run's own trainings may compose to
    min_noise_multiplier: float
    policy: SiloPolicy
    accountant: str = "prv"  # the policy's: calibrates the noise, enforces the budget


def decide(policy: SiloPolicy, request: RunRequest) -> Grant:
    """The terms for ``request``, or :class:`PolicyDeclined` with the key it breaks."""
    p, r = policy.privacy, policy.resources
    if p.require_dp and not request.dp:
        raise PolicyDeclined(
            "privacy.require-dp", "this silo trains only with differential privacy; set dp=true"
        )
    if request.dp and request.target_epsilon > p.max_epsilon_per_run:
        raise PolicyDeclined(
            "privacy.max-epsilon-per-run",
            f"target-epsilon {request.target_epsilon:g} is above this silo's limit of "
            f"{p.max_epsilon_per_run:g} per run",
        )
    if request.dp and request.delta < p.delta:
        raise PolicyDeclined(
            "privacy.delta",
            f"target-delta {request.delta:g} is smaller than the delta {p.delta:g} this "
            "silo accounts at; its guarantee could not be that strong",
        )
    if request.local_epochs > r.max_local_epochs:
        raise PolicyDeclined(
            "resources.max-local-epochs",
            f"local-epochs {request.local_epochs} is above {r.max_local_epochs}",
        )
    if request.batch_size > r.max_batch_size:
        raise PolicyDeclined(
            "resources.max-batch-size",
            f"batch-size {request.batch_size} is above {r.max_batch_size}",
        )
    if request.num_parameters is not None and request.num_parameters > r.max_parameters:
        raise PolicyDeclined(
            "resources.max-parameters",
            f"the model has {request.num_parameters:,} parameters, above {r.max_parameters:,}",
        )
    if request.median_imputation and not policy.statistics.histograms:
        raise PolicyDeclined(
            "statistics.histograms",
            "median imputation needs histograms, which this silo does not share; "
            "use imputation='mean'",
        )
    # With DP statistics, their release and the training compose to the run's target.
    training_epsilon = request.target_epsilon
    if policy.statistics.share == "dp" and policy.statistics.epsilon > request.target_epsilon:
        raise PolicyDeclined(
            "statistics.epsilon",
            f"the statistics' epsilon {policy.statistics.epsilon:g} is above the run's "
            f"target-epsilon {request.target_epsilon:g}, which this silo holds the run to",
        )
    if policy.statistics.share == "dp" and request.dp:
        training_epsilon -= policy.statistics.epsilon
        if training_epsilon <= 0:
            raise PolicyDeclined(
                "statistics.epsilon",
                f"target-epsilon {request.target_epsilon:g} leaves nothing for training after "
                f"the statistics' epsilon {policy.statistics.epsilon:g}",
            )
    # The lifetime budget only ever comes from the policy; a request may lower what this
    # run lets the total reach, and the run's own spending is held to its target even if
    # the server later sends more rounds than it announced.
    return Grant(
        dp=request.dp,
        target_epsilon=training_epsilon,
        delta=p.delta,
        budget=p.budget,
        budget_cap=min(p.budget, request.budget),
        run_epsilon=request.target_epsilon,
        min_noise_multiplier=p.min_noise_multiplier,
        policy=policy,
        accountant=p.accountant,
    )


# -- parsing ---------------------------------------------------------------------------

_SECTIONS: dict[str, tuple[str, type]] = {
    "privacy": ("privacy", PrivacyTerms),
    "statistics": ("statistics", StatisticsTerms),
    "evaluation": ("evaluation", EvaluationTerms),
    "resources": ("resources", ResourceTerms),
}


def _parse(raw: dict[str, Any], base: SiloPolicy, source: str) -> SiloPolicy:
    known = {"silo-id", *_SECTIONS}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PolicyError(
            f"{source}: unknown key(s) {', '.join(unknown)}; a policy has silo-id and the "
            f"tables {', '.join('[' + s + ']' for s in _SECTIONS)}"
        )
    silo_id = raw.get("silo-id")
    if silo_id is not None and not _plain_name(silo_id):
        raise PolicyError(
            f"{source}: silo-id must be a plain name (letters, digits, '-', '_', '.'), "
            f"got {silo_id!r}"
        )
    parts: dict[str, Any] = {"silo_id": silo_id, "source": source}
    for section, (attr, terms_type) in _SECTIONS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise PolicyError(f"{source}: [{section}] must be a table")
        parts[attr] = _parse_terms(table, getattr(base, attr), terms_type, section, source)
    policy = replace(base, **parts)
    _validate(policy, source)
    return policy


def _parse_terms(
    table: dict[str, Any], base: Any, terms_type: type, section: str, source: str
) -> Any:
    names = {f.replace("_", "-"): f for f in terms_type.__dataclass_fields__}
    values = {}
    for key, value in table.items():
        if key not in names:
            raise PolicyError(
                f"{source}: [{section}] has no key {key!r}; it takes {', '.join(sorted(names))}"
            )
        want = type(getattr(base, names[key]))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise PolicyError(f"{source}: {section}.{key} must be {want.__name__}, got {value!r}")
        values[names[key]] = value
    return replace(base, **values)


def _validate(policy: SiloPolicy, source: str) -> None:
    p, s, e, r = policy.privacy, policy.statistics, policy.evaluation, policy.resources
    checks = [
        (math.isfinite(p.budget) and p.budget > 0, "privacy.budget", "a positive number"),
        (
            math.isfinite(p.max_epsilon_per_run) and p.max_epsilon_per_run > 0,
            "privacy.max-epsilon-per-run",
            "a positive number",
        ),
        (0 < p.delta < 1, "privacy.delta", "in (0, 1)"),
        (
            math.isfinite(p.min_noise_multiplier) and p.min_noise_multiplier >= 0,
            "privacy.min-noise-multiplier",
            "non-negative",
        ),
        (p.accountant in ACCOUNTANTS, "privacy.accountant", f"one of {', '.join(ACCOUNTANTS)}"),
        (s.share in SHARE_MODES, "statistics.share", f"one of {', '.join(SHARE_MODES)}"),
        (
            math.isfinite(s.epsilon) and 0 < s.epsilon <= p.max_epsilon_per_run,
            "statistics.epsilon",
            "positive and at most privacy.max-epsilon-per-run",
        ),
        (e.max_evaluations_per_run >= 0, "evaluation.max-evaluations-per-run", ">= 0"),
        (r.max_local_epochs >= 1, "resources.max-local-epochs", ">= 1"),
        (r.max_batch_size >= 1, "resources.max-batch-size", ">= 1"),
        (r.max_parameters >= 1, "resources.max-parameters", ">= 1"),
    ]
    for ok, key, must in checks:
        if not ok:
            raise PolicyError(f"{source}: {key} must be {must}")


def _plain_name(value: object) -> bool:
    if not isinstance(value, str) or not value or value in (".", "..") or len(value) > 128:
        return False
    return all(c.isalnum() or c in "-_." for c in value) and os.sep not in value
