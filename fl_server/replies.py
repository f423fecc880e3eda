"""The only code that reads what a silo sends: each reply becomes a checked value or a
problem with the node and the reason, never an exception.

The server believes no number it did not check. Every value passes one gate
(:func:`number`): no bools, lists or text where a number belongs, finite, inside its range.
Counts are integers and no larger than what that node reported at the statistics step;
accuracies lie in [0, 1]; losses and epsilon are non-negative; a confusion matrix has the
federation's classes and sums to the examples it claims. Model arrays must match the
global model's shared weights (:func:`fl_server.aggregation.check_update`); a reply that
carries a weight the run keeps on the silos (frozen or local) is rejected unread.
Anything else, including a reply that is malformed in a way nobody foresaw, is rejected
inside :func:`_guard`, so a hostile node costs itself its round and never the run.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from flwr.app import Message

from core_training.preprocess import HIST_BINS, FeatureStats
from core_training.schema import Schema
from fl_common import protocol as p
from fl_common.settings import SCORE_METRICS

from .aggregation import Update, check_update

FAILED, REJECTED, DECLINED = "failed", "rejected", "declined"


class BadValue(ValueError):
    """A value in a reply is not what the protocol allows."""


@dataclass(frozen=True)
class Problem:
    """A reply that cannot be used: ``kind`` is failed (an error or no reply), rejected
    (content the server refuses) or declined (the silo's own choice)."""

    node: int
    kind: str
    reason: str
    silo: str = ""
    policy_key: str = ""  # set when a silo's policy declined (else: its budget)

    @property
    def name(self) -> str:
        return f"node {self.node}"


@dataclass(frozen=True)
class StatsReply:
    node: int
    silo: str
    schema_text: str
    schema_digest: str
    rows: int
    stats: FeatureStats | None  # None: the silo's policy shares no statistics
    share: str


@dataclass(frozen=True)
class Evaluation:
    """A silo's validation of a model: what federated validation pools."""

    examples: int
    loss: float
    accuracy: float
    confusion: np.ndarray  # (classes, classes): rows true, columns predicted
    # With local layers this is the silo's personalized model; the global model's own
    # validation (the initial local layers) comes with it, on the same rows.
    global_model: Evaluation | None = None


@dataclass(frozen=True)
class TrainReply:
    node: int
    silo: str
    update: Update
    epsilon: float | None
    evaluation: Evaluation | None  # the received model on the silo's validation rows
    accountant: str = ""  # the silo's word for what produced its epsilon


T = TypeVar("T")


# -- the number gate -------------------------------------------------------------------


def number(
    value: Any,
    name: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    integer: bool = False,
) -> float:
    """``value`` as a float if it is a finite real number in [low, high] (an integer
    when asked); else :class:`BadValue` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadValue(f"{name} must be a number, got {type(value).__name__} {value!r:.40}")
    out = float(value)
    if not math.isfinite(out):
        raise BadValue(f"{name} must be finite, got {out}")
    if integer and out != math.floor(out):
        raise BadValue(f"{name} must be a whole number, got {out:g}")
    if not low <= out <= high:
        raise BadValue(f"{name} = {out:g} is outside [{low:g}, {high:g}]")
    return out


# -- statistics ------------------------------------------------------------------------


def parse_stats(reply: Message, node: int, schema: Schema) -> StatsReply | Problem:
    """A statistics reply, checked against the federation's ``schema``."""
    return _guard(node, lambda: _parse_stats(reply, node, schema))


def _parse_stats(reply: Message, node: int, schema: Schema) -> StatsReply | Problem:
    early = _status(reply, node)
    if early is not None:
        return early
    info = _info(reply)
    rows = int(number(_metric(reply, p.NUM_EXAMPLES), p.NUM_EXAMPLES, low=1, integer=True))
    share = _text(info.get("statistics", "exact"), "statistics")
    stats = None
    if p.STATS in reply.content.array_records:
        stats = p.record_to_stats(reply.content[p.STATS])
        check_stats(stats, schema, rows=rows, exact=share == "exact")
    elif share != "none":
        raise BadValue("the reply has no statistics but does not say it withholds them")
    return StatsReply(
        node=node,
        silo=_text(info.get("silo", ""), "silo")[:64],
        schema_text=_text(info.get("schema", ""), "schema"),
        schema_digest=_text(info.get("schema_digest", ""), "schema_digest"),
        rows=rows,
        stats=stats,
        share=share,
    )


def check_stats(stats: FeatureStats, schema: Schema, *, rows: int, exact: bool) -> None:
    """Shapes from the schema (one column per channel for images), finite values, and
    for exact statistics the counts that must agree with the rows the silo reported
    (noisy DP statistics need not) and, for images, figures pixels in [0, 1] can have."""
    d, k = schema.stats_width, schema.num_classes
    for name, value in stats.to_dict().items():
        arr = np.asarray(value, dtype=np.float64)
        want = (k,) if name == "class_counts" else (d, HIST_BINS) if "hist" in name else (d,)
        if arr.shape != want:
            raise BadValue(f"statistics {name}: shape {arr.shape}, expected {want}")
        bounds = name in ("minimum", "maximum")
        if not (np.isfinite(arr) | (bounds & np.isnan(arr))).all():
            raise BadValue(f"statistics {name}: holds NaN or infinite values")
    for name in ("count", "class_counts", "hist", "log_hist"):
        values = getattr(stats, name, None)
        if values is not None and (np.asarray(values) < 0).any():
            raise BadValue(f"statistics {name}: negative counts")
    if not exact:
        return
    counts = np.asarray(stats.class_counts)
    if not np.array_equal(counts, np.round(counts)) or counts.sum() != rows:
        raise BadValue(f"statistics class_counts sum to {counts.sum():g}, not the {rows} rows")
    count = np.asarray(stats.count)
    if not np.array_equal(count, np.round(count)) or (count > rows).any():
        raise BadValue(f"statistics count: whole numbers up to {rows} expected")
    low, high = np.asarray(stats.minimum), np.asarray(stats.maximum)
    present = count > 0
    if np.isnan(low[present]).any() or (low[present] > high[present]).any():
        raise BadValue("statistics minimum/maximum: missing or minimum above maximum")
    if schema.is_image:
        _check_image_stats(stats, rows)


def _check_image_stats(stats: FeatureStats, rows: int) -> None:
    """Per-channel figures of ``rows`` images with pixel values in [0, 1]: every image
    has every channel, and no mean or spread lies outside what such values allow."""
    if (np.asarray(stats.count) != rows).any():
        raise BadValue(f"statistics count: every channel of an image silo counts its {rows} images")
    low, high, mean = (np.asarray(v) for v in (stats.minimum, stats.maximum, stats.mean))
    if (low < 0).any() or (high > 1).any() or (mean < low).any() or (mean > high).any():
        raise BadValue("statistics of an image silo: pixel figures outside [0, 1]")
    # values in [0, 1] vary by at most a quarter (half of them at 0, half at 1)
    if (np.asarray(stats.m2) > 0.25 * rows * (1 + 1e-9)).any():
        raise BadValue("statistics m2 of an image silo: more spread than pixels in [0, 1] allow")


# -- training --------------------------------------------------------------------------


def parse_train(
    reply: Message,
    node: int,
    *,
    reference: dict[str, np.ndarray],
    rows: int | None,
    num_classes: int,
    val_fraction: float,
    kept: frozenset[str] = frozenset(),
) -> TrainReply | Problem:
    """A train reply: an update no larger than the node's reported rows, checked
    arrays and metrics. ``rows`` is what the node reported at the statistics step.
    ``kept`` names the weights the run keeps on the silos (frozen or local): a reply
    that carries any of them is rejected whole, and those arrays are never read."""
    return _guard(
        node,
        lambda: _parse_train(reply, node, reference, rows, num_classes, val_fraction, kept),
    )


def _parse_train(
    reply: Message,
    node: int,
    reference: dict[str, np.ndarray],
    rows: int | None,
    num_classes: int,
    val_fraction: float,
    kept: frozenset[str],
) -> TrainReply | Problem:
    early = _status(reply, node)
    if early is not None:
        return early
    if rows is None:
        raise BadValue("this node reported no rows at the statistics step of this run")
    if p.ARRAYS not in reply.content.array_records:
        raise BadValue("reply without model arrays")
    metrics = _metrics(reply)
    examples = number(metrics.get(p.NUM_EXAMPLES), p.NUM_EXAMPLES, low=1, high=rows, integer=True)
    checked = {
        p.NUM_EXAMPLES: examples,
        "train_loss": number(metrics.get("train_loss"), "train_loss", low=0),
        "train_accuracy": number(metrics.get("train_accuracy"), "train_accuracy", low=0, high=1),
        "train_seconds": number(metrics.get("train_seconds", 0.0), "train_seconds", low=0),
    }
    eps = number(metrics.get("epsilon", -1.0), "epsilon", low=-1)
    if -1 < eps < 0:
        raise BadValue(f"epsilon must be -1 (no DP) or non-negative, got {eps:g}")
    evaluation = _evaluations(metrics, rows, num_classes, val_fraction)
    leaked = sorted(set(reply.content[p.ARRAYS]) & kept)
    if leaked:
        shown = ", ".join(leaked[:6]) + (", ..." if len(leaked) > 6 else "")
        raise BadValue(
            f"the update carries {len(leaked)} weight(s) this run keeps on the silos "
            f"(frozen or local: {shown}); rejected unread"
        )
    arrays = p.record_to_numpy(reply.content[p.ARRAYS])
    problems = check_update(arrays, reference, examples)
    if problems:
        raise BadValue("; ".join(problems))
    if evaluation is not None:
        checked.update(val_loss=evaluation.loss, val_examples=float(evaluation.examples))
    info = _info(reply)
    return TrainReply(
        node=node,
        silo=_text(info.get("silo", ""), "silo")[:64],
        update=Update(f"node {node}", arrays, int(examples), checked),
        epsilon=eps if eps >= 0 else None,
        evaluation=evaluation,
        accountant=_text(info.get("accountant", ""), "accountant")[:16],
    )


# -- evaluation ------------------------------------------------------------------------


def parse_eval(
    reply: Message, node: int, *, rows: int | None, num_classes: int, val_fraction: float
) -> Evaluation | Problem:
    """An evaluate reply: the validation of the model the server sent."""

    def parse() -> Evaluation | Problem:
        early = _status(reply, node, info_required=False)
        if early is not None:
            return early
        if rows is None:
            raise BadValue("this node reported no rows at the statistics step of this run")
        metrics = _metrics(reply)
        if number(metrics.get("val_held_out", 1), "val_held_out", low=0, high=1) == 0:
            raise BadValue("too few rows to hold out: validated on its training rows, not used")
        found = _evaluations(metrics, rows, num_classes, val_fraction)
        if found is None:
            raise BadValue("evaluate reply without validation metrics")
        return found

    return _guard(node, parse)


def _evaluations(
    metrics: dict[str, Any],
    rows: int,
    num_classes: int,
    val_fraction: float,
    *,
    split: str = "val",
    most: int | None = None,
) -> Evaluation | None:
    """The reply's validation (or test, ``split = "test"``), with the global model's
    alongside when it has one: same rows, so the same count of each true class."""
    kw = {"split": split, "most": most}
    found = _evaluation(metrics, rows, num_classes, val_fraction, prefix=f"{split}_", **kw)
    if found is None:
        return None
    other = _evaluation(
        metrics, rows, num_classes, val_fraction, prefix=f"{p.GLOBAL_PREFIX}{split}_", **kw
    )
    if other is not None and other.examples != found.examples:
        raise BadValue(
            f"the global model was scored on {other.examples} rows, the personalized "
            f"one on {found.examples}: both must use the same {split} rows"
        )
    if other is not None and not np.array_equal(
        other.confusion.sum(axis=1), found.confusion.sum(axis=1)
    ):
        raise BadValue(
            f"the global and the personalized model's {split} rows hold different counts "
            "of each class: both must use the same rows"
        )
    return found if other is None else dataclasses.replace(found, global_model=other)


def _evaluation(
    metrics: dict[str, Any],
    rows: int,
    num_classes: int,
    val_fraction: float,
    *,
    prefix: str,
    split: str = "val",
    most: int | None = None,
) -> Evaluation | None:
    """The validation metrics of a reply (None when it holds none). The validation
    split is at most ``val_fraction`` of the silo's rows (all of them for a silo too
    small to hold rows out), which bounds the examples it may claim; a test split's
    bound comes as ``most``."""
    key = f"{split}_examples" if f"{split}_examples" in metrics else p.NUM_EXAMPLES
    if f"{prefix}loss" not in metrics:
        return None
    held = f"{split}_held_out"
    if number(metrics.get(held, 1), held, low=0, high=1, integer=True) == 0:
        return None  # validated on its training rows: not a validation the server uses
    if most is None:
        most = max(rows, math.ceil(rows * val_fraction / (1 - val_fraction)) + 1)
    examples = int(number(metrics.get(key), key, low=0, high=most, integer=True))
    loss = number(metrics.get(f"{prefix}loss"), f"{prefix}loss", low=0)
    for name in SCORE_METRICS:
        name = prefix + name.removeprefix("val_")
        number(metrics.get(name), name, low=0, high=1)
    flat = metrics.get(f"{prefix}confusion")
    if not isinstance(flat, list) or len(flat) != num_classes * num_classes:
        raise BadValue(f"{prefix}confusion must list {num_classes}x{num_classes} counts")
    cells = [number(v, f"{prefix}confusion", low=0, high=examples, integer=True) for v in flat]
    confusion = np.asarray(cells, dtype=np.int64).reshape(num_classes, num_classes)
    if int(confusion.sum()) != examples:
        raise BadValue(f"{prefix}confusion sums to {confusion.sum()}, not {examples} examples")
    accuracy = float(np.trace(confusion) / examples) if examples else 0.0
    return Evaluation(examples, loss, accuracy, confusion)


# -- the test evaluation ---------------------------------------------------------------


@dataclass(frozen=True)
class HeldOutReply:
    """A silo's score of the kept model on its test rows; ``evaluation`` None: the silo
    holds no test split (``reason`` says why). With local layers ``evaluation`` is its
    personalized model of the kept round (``layers_round``: the training round its local
    layers come from) and ``evaluation.global_model`` the global model."""

    node: int
    evaluation: Evaluation | None
    reason: str = ""
    layers_round: int | None = None


def most_test_rows(rows: int, val_fraction: float, test_fraction: float) -> int:
    """The most test rows a silo that reported ``rows`` training rows can hold: its
    test split is ``test_fraction`` of all its rows, taken before the validation split."""
    before_val = (rows + 1) / (1 - val_fraction)
    return math.ceil((before_val * test_fraction + 0.5) / (1 - test_fraction)) + 1


def parse_test(
    reply: Message,
    node: int,
    *,
    rows: int | None,
    num_classes: int,
    val_fraction: float,
    test_fraction: float,
    judged_round: int,
) -> HeldOutReply | Problem:
    """A test reply: confusion counts of the federation's classes that sum to the
    examples claimed, no more examples than the silo's test split can hold, the
    personalized and global model on the same rows, finite scores in [0, 1]."""

    def parse() -> HeldOutReply | Problem:
        early = _status(reply, node)
        if early is not None:
            return early
        if rows is None:
            raise BadValue("this node reported no rows at the statistics step of this run")
        metrics = _metrics(reply)
        held = number(metrics.get("test_held_out"), "test_held_out", low=0, high=1, integer=True)
        if held == 0:
            reason = _text(_info(reply).get("reason", ""), "reason")[:500]
            return HeldOutReply(node, None, reason or "no test split")
        most = most_test_rows(rows, val_fraction, test_fraction)
        found = _evaluations(metrics, rows, num_classes, val_fraction, split="test", most=most)
        if found is None or found.examples == 0:
            raise BadValue("test reply without test metrics")
        layers_round = None
        if found.global_model is not None:
            layers_round = int(
                number(
                    metrics.get("test_layers_round"),
                    "test_layers_round",
                    low=0,
                    high=max(judged_round - 1, 0),
                    integer=True,
                )
            )
        return HeldOutReply(node, found, layers_round=layers_round)

    return _guard(node, parse)


# -- reading records -------------------------------------------------------------------


def _guard(node: int, parse: Callable[[], T]) -> T | Problem:
    try:
        return parse()
    except BadValue as exc:
        return Problem(node, REJECTED, str(exc))
    except Exception as exc:  # a malformed reply of a kind no check foresaw
        return Problem(node, REJECTED, f"malformed reply ({type(exc).__name__}: {exc!s:.200})")


def _status(reply: Message, node: int, *, info_required: bool = True) -> Problem | None:
    """The reply's error or the silo's refusal, before any content is read."""
    if reply.has_error():
        return Problem(node, FAILED, str(reply.error.reason)[:500])
    if p.INFO not in reply.content.config_records:
        if info_required:
            raise BadValue("reply without its info record")
        return None
    info = reply.content[p.INFO]
    if info.get("status") == p.STATUS_DECLINED:
        return Problem(
            node,
            DECLINED,
            _text(info.get("reason", ""), "reason")[:500],
            silo=_text(info.get("silo", ""), "silo")[:64],
            policy_key=_text(info.get("policy_key", ""), "policy_key"),
        )
    if info.get("status") != p.STATUS_OK:
        raise BadValue(f"unknown status {info.get('status')!r:.40}")
    return None


def _info(reply: Message) -> Any:
    if p.INFO not in reply.content.config_records:
        raise BadValue("reply without its info record")
    return reply.content[p.INFO]


def _metrics(reply: Message) -> dict[str, Any]:
    if p.METRICS not in reply.content.metric_records:
        raise BadValue("reply without its metrics record")
    return dict(reply.content[p.METRICS])


def _metric(reply: Message, key: str) -> Any:
    return _metrics(reply).get(key)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise BadValue(f"{name} must be text, got {type(value).__name__}")
    return value
