"""replies.py: every hostile or malformed reply becomes a problem with the node and the
reason, never an exception, and never a value that reaches aggregation or selection."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.app.message.message import make_message
from hypothesis import given, settings
from hypothesis import strategies as st

from core_training.preprocess import compute_stats
from core_training.schema import Feature, Schema
from fl_common import protocol as p
from fl_server.replies import (
    Evaluation,
    Problem,
    StatsReply,
    TrainReply,
    number,
    parse_eval,
    parse_stats,
    parse_train,
)

NODE, ROWS, CLASSES = 7, 100, 2
SCHEMA = Schema("y", (0, 1), (Feature("a"), Feature("b"), Feature("c")))
REFERENCE = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}


def reply(content: RecordDict | None = None, *, error: str | None = None) -> Message:
    meta = Metadata(1, "m", NODE, 0, "", "q", 0.0, 60.0, MessageType.TRAIN)
    if error is not None:
        return make_message(meta, error=Error(code=0, reason=error))
    return make_message(meta, content=content)


def info(**extra: Any) -> ConfigRecord:
    return ConfigRecord({"status": "ok", "reason": "", "silo": "s", **extra})


def train_metrics(**changes: Any) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        p.NUM_EXAMPLES: 80,
        "train_loss": 0.4,
        "train_accuracy": 0.8,
        "val_examples": 20,
        "val_loss": 0.5,
        "val_accuracy": 0.75,
        "val_balanced_accuracy": 0.7,
        "val_macro_f1": 0.7,
        "val_confusion": [8, 2, 3, 7],
        "epsilon": 1.5,
        "budget_exhausted": 0,
        "train_seconds": 1.0,
    }
    metrics.update(changes)
    return {k: v for k, v in metrics.items() if v is not None}


def train_reply(arrays: dict[str, np.ndarray] | None = None, **metrics: Any) -> Message:
    arrays = REFERENCE if arrays is None else arrays
    return reply(
        RecordDict(
            {
                p.ARRAYS: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                p.METRICS: MetricRecord(train_metrics(**metrics)),
                p.INFO: info(),
            }
        )
    )


def parse(message: Message, rows: int | None = ROWS) -> TrainReply | Problem:
    return parse_train(
        message, NODE, reference=REFERENCE, rows=rows, num_classes=CLASSES, val_fraction=0.2
    )


def stats_reply(stats: dict[str, Any] | None = None, rows: int = ROWS, **extra: Any) -> Message:
    X = np.random.default_rng(0).normal(size=(rows, 3))
    y = np.arange(rows) % 2
    arrays = stats if stats is not None else compute_stats(X, y, 2).to_dict()
    toml = SCHEMA.to_toml()
    content = RecordDict(
        {
            p.STATS: ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()}),
            p.METRICS: MetricRecord({p.NUM_EXAMPLES: rows}),
            p.INFO: info(schema=toml, schema_digest=p.schema_digest(toml), **extra),
        }
    )
    return reply(content)


def test_a_good_train_reply_is_an_update_with_checked_numbers() -> None:
    parsed = parse(train_reply())
    assert isinstance(parsed, TrainReply)
    assert parsed.update.num_examples == 80 and parsed.epsilon == 1.5
    assert parsed.evaluation is not None and parsed.evaluation.examples == 20
    assert parsed.evaluation.accuracy == pytest.approx(15 / 20)  # from the matrix itself


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({p.NUM_EXAMPLES: 80_000}, "num-examples = 80000 is outside [1, 100]"),
        ({p.NUM_EXAMPLES: 0}, "num-examples = 0 is outside"),
        ({p.NUM_EXAMPLES: 12.5}, "num-examples must be a whole number"),
        ({"epsilon": [1.0, 2.0]}, "epsilon must be a number, got list"),
        ({"epsilon": -0.5}, "epsilon must be -1 (no DP) or non-negative"),
        ({"epsilon": float("nan")}, "epsilon must be finite"),
        ({"train_loss": -1.0}, "train_loss = -1 is outside"),
        ({"train_loss": float("inf")}, "train_loss must be finite"),
        ({"train_accuracy": 1.5}, "train_accuracy = 1.5 is outside [0, 1]"),
        ({"val_accuracy": 1e9}, "val_accuracy = 1e+09 is outside [0, 1]"),
        ({"val_examples": 10_000}, "val_examples = 10000 is outside"),
        ({"val_confusion": [8, 2, 3]}, "val_confusion must list 2x2 counts"),
        ({"val_confusion": [8, 2, 3, 6]}, "val_confusion sums to 19, not 20 examples"),
        ({"val_confusion": [8, -2, 5, 9]}, "val_confusion = -2 is outside"),
        ({p.NUM_EXAMPLES: None}, "num-examples must be a number, got NoneType"),
    ],
)
def test_a_hostile_train_metric_is_rejected_with_its_reason(
    metrics: dict[str, Any], reason: str
) -> None:
    parsed = parse(train_reply(**metrics))
    assert isinstance(parsed, Problem) and parsed.kind == "rejected" and parsed.node == NODE
    assert reason in parsed.reason


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        ({"w": np.full((2, 3), np.nan, np.float32), "b": REFERENCE["b"]}, "NaN or infinite"),
        ({"w": np.zeros((1, 3), np.float32), "b": REFERENCE["b"]}, "shape (1, 3)"),
        ({"w": REFERENCE["w"]}, "missing arrays ['b']"),
        ({**REFERENCE, "x": np.zeros(1, np.float32)}, "unexpected arrays ['x']"),
        ({"w": REFERENCE["w"].astype(np.float64), "b": REFERENCE["b"]}, "dtype float64"),
    ],
)
def test_a_broken_update_is_rejected_by_array(arrays: dict[str, np.ndarray], reason: str) -> None:
    parsed = parse(train_reply(arrays))
    assert isinstance(parsed, Problem) and reason in parsed.reason


def test_an_update_from_a_node_that_reported_no_rows_is_rejected() -> None:
    parsed = parse(train_reply(), rows=None)
    assert isinstance(parsed, Problem) and "no rows at the statistics step" in parsed.reason


@pytest.mark.parametrize(
    ("message", "kind", "reason"),
    [
        (reply(error="node lost"), "failed", "node lost"),
        (reply(RecordDict({p.METRICS: MetricRecord(train_metrics())})), "rejected", "info"),
        (reply(RecordDict({p.INFO: info()})), "rejected", "without model arrays"),
        (
            reply(RecordDict({p.ARRAYS: ArrayRecord(), p.INFO: info()})),
            "rejected",
            "metrics record",
        ),
        (
            reply(RecordDict({p.INFO: ConfigRecord({"status": "weird"})})),
            "rejected",
            "unknown status",
        ),
    ],
)
def test_malformed_train_replies_are_problems_not_exceptions(
    message: Message, kind: str, reason: str
) -> None:
    parsed = parse(message)
    assert isinstance(parsed, Problem) and parsed.kind == kind and reason in parsed.reason


def test_a_declined_reply_carries_the_policy_key() -> None:
    declined = ConfigRecord(
        {"status": "declined", "reason": "no", "silo": "h", "policy_key": "privacy.require-dp"}
    )
    parsed = parse(reply(RecordDict({p.INFO: declined})))
    assert isinstance(parsed, Problem) and parsed.kind == "declined"
    assert parsed.policy_key == "privacy.require-dp" and parsed.silo == "h"


def test_good_statistics_are_accepted_with_the_rows_reported() -> None:
    parsed = parse_stats(stats_reply(), NODE, SCHEMA)
    assert isinstance(parsed, StatsReply) and parsed.rows == ROWS and parsed.stats is not None


def _stats(**changes: Any) -> dict[str, Any]:
    X = np.random.default_rng(0).normal(size=(ROWS, 3))
    stats = compute_stats(X, np.arange(ROWS) % 2, 2).to_dict()
    stats.update(changes)
    return stats


@pytest.mark.parametrize(
    ("stats", "reason"),
    [
        (_stats(mean=[float("nan")] * 3), "finite"),
        (_stats(count=[100.0, 100.0]), "one value per column"),
        (_stats(m2=[1.0, 1.0, 1.0, 1.0]), "one value per column"),
        (_stats(class_counts=[50.0, 50.0, 1.0]), "class_counts: shape (3,), expected (2,)"),
        (_stats(class_counts=[60.0, 60.0]), "sum to 120"),
        (_stats(count=[100.0, 100.0, 1e9]), "more values than the table has rows"),
        (_stats(m2=[-1.0, 1.0, 1.0]), "non-negative"),
        (_stats(minimum=[5.0, 0.0, 0.0], maximum=[1.0, 1.0, 1.0]), "minimum above maximum"),
    ],
)
def test_hostile_statistics_are_rejected(stats: dict[str, Any], reason: str) -> None:
    parsed = parse_stats(stats_reply(stats), NODE, SCHEMA)
    assert isinstance(parsed, Problem) and parsed.kind == "rejected", parsed
    assert reason in parsed.reason


def test_statistics_without_their_info_record_are_rejected_not_raised() -> None:
    message = reply(RecordDict({p.METRICS: MetricRecord({p.NUM_EXAMPLES: 5})}))
    parsed = parse_stats(message, NODE, SCHEMA)
    assert isinstance(parsed, Problem) and "info record" in parsed.reason


def test_withheld_statistics_are_accepted_only_when_the_silo_says_so() -> None:
    toml = SCHEMA.to_toml()
    base = {p.METRICS: MetricRecord({p.NUM_EXAMPLES: 40})}
    said = info(schema=toml, schema_digest=p.schema_digest(toml), statistics="none")
    ok = parse_stats(reply(RecordDict({**base, p.INFO: said})), NODE, SCHEMA)
    assert isinstance(ok, StatsReply) and ok.stats is None and ok.rows == 40
    silent = info(schema=toml, schema_digest=p.schema_digest(toml))
    bad = parse_stats(reply(RecordDict({**base, p.INFO: silent})), NODE, SCHEMA)
    assert isinstance(bad, Problem)


def eval_reply(**metrics: Any) -> Message:
    values = {
        p.NUM_EXAMPLES: 20,
        "val_loss": 0.5,
        "val_accuracy": 0.75,
        "val_balanced_accuracy": 0.7,
        "val_macro_f1": 0.7,
        "val_confusion": [8, 2, 3, 7],
        **metrics,
    }
    values = {k: v for k, v in values.items() if v is not None}
    return reply(RecordDict({p.METRICS: MetricRecord(values), p.INFO: info()}))


def test_an_evaluate_reply_is_pooled_from_its_confusion_matrix() -> None:
    parsed = parse_eval(eval_reply(), NODE, rows=ROWS, num_classes=2, val_fraction=0.2)
    assert isinstance(parsed, Evaluation)
    assert parsed.confusion.tolist() == [[8, 2], [3, 7]]


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({"val_accuracy": 1e9}, "outside [0, 1]"),
        ({p.NUM_EXAMPLES: 1}, "val_confusion = 8 is outside [0, 1]"),  # claims 1 example
        ({"val_loss": None}, "without validation metrics"),
        ({"val_confusion": None}, "val_confusion must list"),
    ],
)
def test_hostile_evaluate_replies_are_rejected(metrics: dict[str, Any], reason: str) -> None:
    parsed = parse_eval(eval_reply(**metrics), NODE, rows=ROWS, num_classes=2, val_fraction=0.2)
    assert isinstance(parsed, Problem) and reason in parsed.reason


def test_an_evaluate_reply_without_metrics_is_rejected() -> None:
    parsed = parse_eval(
        reply(RecordDict({p.INFO: info()})), NODE, rows=ROWS, num_classes=2, val_fraction=0.2
    )
    assert isinstance(parsed, Problem) and "metrics record" in parsed.reason


@pytest.mark.parametrize(
    ("value", "ok"),
    [(3, True), (np.int64(3), True), (np.float32(0.5), True), (True, False), ("3", False)],
)
def test_the_number_gate_takes_real_numbers_only(value: object, ok: bool) -> None:
    if ok:
        assert number(value, "x") == float(value)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError, match="x must be a number"):
            number(value, "x")


# -- parsing never raises, whatever a reply holds --------------------------------------

_scalar = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5),
    st.lists(st.integers(-5, 50), max_size=6),
)
_keys = st.sampled_from([*sorted(train_metrics()), "junk"])


@settings(max_examples=300, deadline=None)
@given(metrics=st.dictionaries(_keys, _scalar, max_size=14), drop_info=st.booleans())
def test_parsing_a_train_reply_never_raises(metrics: dict[str, Any], drop_info: bool) -> None:
    content = RecordDict(
        {
            p.ARRAYS: ArrayRecord({k: Array(v) for k, v in REFERENCE.items()}),
            p.METRICS: MetricRecord(metrics),
        }
    )
    if not drop_info:
        content[p.INFO] = info()
    parsed = parse(reply(content))
    if isinstance(parsed, TrainReply):  # whatever passed is in range
        assert 1 <= parsed.update.num_examples <= ROWS
        assert parsed.epsilon is None or parsed.epsilon >= 0


@settings(max_examples=200, deadline=None)
@given(
    arrays=st.dictionaries(
        st.sampled_from(["count", "mean", "m2", "m3", "class_counts", "minimum", "hist", "x"]),
        st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
        max_size=8,
    )
)
def test_parsing_statistics_never_raises(arrays: dict[str, list[float]]) -> None:
    parsed = parse_stats(stats_reply(arrays), NODE, SCHEMA)
    assert isinstance(parsed, (Problem, StatsReply))


def test_pooled_scores_are_the_federations_not_an_average_of_silos() -> None:
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from fl_server.loop import pool_evaluations

    # label skew: silo A holds only class 0 (and predicts class 1 for 20 of 100 rows),
    # silo B only class 1 (all right)
    a_true, a_pred = np.zeros(100, int), np.r_[np.zeros(80, int), np.ones(20, int)]
    b_true, b_pred = np.ones(10, int), np.ones(10, int)
    silos = []
    for t, q in ((a_true, a_pred), (b_true, b_pred)):
        confusion = np.zeros((2, 2), int)
        np.add.at(confusion, (t, q), 1)
        silos.append(Evaluation(len(t), 0.5, float((t == q).mean()), confusion))
    pooled = pool_evaluations(silos)
    y_true, y_pred = np.r_[a_true, b_true], np.r_[a_pred, b_pred]
    assert pooled["val_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert pooled["val_macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))

    # averaging each silo's own scores, weighted by rows, gives other numbers
    def averaged(score) -> float:  # type: ignore[no-untyped-def]
        return (100 * score(a_true, a_pred) + 10 * score(b_true, b_pred)) / 110

    assert abs(pooled["val_balanced_accuracy"] - averaged(balanced_accuracy_score)) > 0.05
    per_silo_f1 = averaged(lambda t, q: f1_score(t, q, labels=np.unique(t), average="macro"))
    assert abs(pooled["val_macro_f1"] - per_silo_f1) > 0.1
