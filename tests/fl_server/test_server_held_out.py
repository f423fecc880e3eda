"""The once-only test evaluation (silo-test-fraction) over the fake Grid with the real
ClientApp handlers: one message at the end with the kept round's model, the
personalized models of that round (not the last), figures checked against
scikit-learn on the same rows, hostile replies refused and named, and no second look."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss

sys.path.insert(0, str(Path(__file__).parent))
from fake_grid import FAST as FAST_RUN
from fake_grid import (
    Behaviour,
    FakeGrid,
    honest,
    task_identity,  # noqa: F401 (the autouse fixture)
)

from core_training.models import build_model
from core_training.pipeline import model_spec_for
from fl_client import personal
from fl_client.app import evaluate_global
from fl_client.silo import silo_for
from fl_common import protocol as p
from fl_common.modelfile import load_model
from fl_common.settings import fedsilo_home, from_run_config
from fl_server.app import Federation
from fl_server.replies import HeldOutReply, Problem, parse_test
from privacy.keys import resolve_key

# Three rounds at most; a round only counts as better when its pooled validation
# accuracy gains 0.2, which round 1 does (from chance) and no later round can: the
# kept round is 1, validated in round 2, and early stopping ends the run after round 4.
RUN = {
    **FAST_RUN,
    "num-server-rounds": 6,
    "validation": "federated",
    "silo-test-fraction": 0.25,
    "early-stopping-metric": "val_accuracy",
    "early-stopping-min-delta": 0.2,
    "early-stopping-patience": 2,
}
PERSONAL = {"local-layers": "net.3.*"}
HEAD = ("net.3.weight", "net.3.bias")


def federate(
    tmp_path: Path,
    behaviours: dict[int, Callable[[int], Behaviour]] | None = None,
    name: str = "r",
    **config: Any,
) -> tuple[dict[str, Any], FakeGrid]:
    run_config = {**RUN, "artifacts-dir": str(tmp_path), "run-name": name, **config}
    grid = FakeGrid(3, run_config, behaviours)
    summary = Federation(grid, *from_run_config(run_config), run_id=1).run()  # type: ignore[arg-type]
    return summary, grid


def is_test(message: Message) -> bool:
    config = message.content.config_records.get(p.CONFIG)
    return config is not None and bool(config.get(p.TEST, False))


def sent_tests(grid: FakeGrid) -> list[tuple[Message, Message]]:
    return [(m, r) for m, r in grid.answered if is_test(m)]


def silo_label(context: Context) -> str:
    return f"breast-cancer-iid-3-s0-p{context.node_config['partition-id']}"


def recording_heads(store: dict[tuple[str, int], dict[str, torch.Tensor]]) -> Behaviour:
    """Honest, and keeps each silo's local layers as its training left them, by round."""

    def answer(msg: Message, context: Context) -> Message:
        reply = honest(msg, context)
        if msg.metadata.message_type == MessageType.TRAIN:
            silo = silo_label(context)
            path = fedsilo_home() / "layers" / f"{silo}-r.layers"
            kept = personal.load_kept(path, key=resolve_key(None))
            store[(silo, int(msg.content[p.CONFIG]["server-round"]))] = dict(kept.local)
        return reply

    return answer


def scikit_scores(
    grid: FakeGrid, message: Message, context: Context, layers: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """The silo's test rows scored here: the test message's shared weights and
    preprocessing, ``layers`` for the rest, predictions by torch, scores by scikit-learn."""
    settings, config = from_run_config(dict(context.run_config))
    silo = silo_for(dict(context.node_config), settings, config)
    assert silo.test is not None
    pre, _ = p.record_to_prep(message.content[p.PREP])
    model = build_model(model_spec_for(silo.train, config))
    shared = p.record_to_state(message.content[p.ARRAYS])
    model.load_state_dict({**shared, **layers})
    model.eval()
    with torch.no_grad():
        X = torch.as_tensor(pre.transform(silo.test.X), dtype=torch.float32)
        proba = torch.softmax(model(X), dim=1).numpy()
    y = silo.test.y
    return {
        "y": y,
        "pred": proba.argmax(1),
        "accuracy": accuracy_score(y, proba.argmax(1)),
        "loss": log_loss(y, proba, labels=[0, 1]),
        "confusion": confusion_matrix(y, proba.argmax(1), labels=[0, 1]).ravel().tolist(),
    }


def test_one_test_message_scores_the_kept_round_s_personalized_models_not_the_last(
    tmp_path: Path,
) -> None:
    heads: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    behaviours = {n: (lambda r: recording_heads(heads)) for n in (101, 102, 103)}
    summary, grid = federate(tmp_path, behaviours, **PERSONAL)
    assert summary["stop_reason"] == "early-stopping" and summary["rounds_completed"] == 4
    assert summary["best_round"] == 1
    sent = sent_tests(grid)
    assert len(sent) == 3  # one per silo
    assert sum(any(is_test(m) for m in batch) for batch in grid.pushed) == 1  # one push
    key = resolve_key(None)
    best = load_model(Path(summary["run_dir"]) / "best-model.bin", key=key).model.state_dict()
    test = summary["test"]
    assert (test["round"], test["judged_round"], test["silos"]) == (1, 2, 3)
    pooled_y, pooled_pred = [], []
    initial_head = {k: best[k] for k in HEAD}  # the server's file holds the initial head
    for message, reply in sent:
        config = message.content[p.CONFIG]
        assert (config[p.MODEL_ROUND], config[p.JUDGED_ROUND]) == (1, 2)
        shared = p.record_to_state(message.content[p.ARRAYS])
        assert set(shared) == set(best) - set(HEAD)
        assert all(shared[k].equal(best[k]) for k in shared)  # the kept model's weights
        context = grid.contexts[message.metadata.dst_node_id]
        silo = silo_label(context)
        kept_round, last_round = heads[(silo, 1)], heads[(silo, 4)]
        assert not kept_round["net.3.weight"].equal(last_round["net.3.weight"])
        metrics = dict(reply.content[p.METRICS])
        assert metrics["test_layers_round"] == 1
        want = scikit_scores(grid, message, context, kept_round)
        assert metrics["test_accuracy"] == pytest.approx(want["accuracy"])
        assert metrics["test_loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert metrics["test_confusion"] == want["confusion"]
        last = scikit_scores(grid, message, context, last_round)
        assert not math.isclose(metrics["test_loss"], last["loss"], rel_tol=1e-6)
        glob = scikit_scores(grid, message, context, initial_head)
        assert metrics["global_test_loss"] == pytest.approx(glob["loss"], rel=1e-5)
        assert test["personalized"]["by_silo"][silo] == pytest.approx(want["accuracy"])
        assert test["global"]["by_silo"][silo] == pytest.approx(glob["accuracy"])
        pooled_y.append(want["y"])
        pooled_pred.append(want["pred"])
        snapshots = fedsilo_home() / "layers" / f"{silo}-r.snapshots"
        assert not snapshots.exists()  # read once, then deleted
        assert (fedsilo_home() / "layers" / f"{silo}-r.layers").exists()  # kept for resume
    y, pred = np.concatenate(pooled_y), np.concatenate(pooled_pred)
    assert test["personalized"]["pooled_accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert test["personalized"]["examples"] == len(y)
    by_silo = test["personalized"]["by_silo"].values()
    assert test["personalized"]["mean_accuracy"] == pytest.approx(sum(by_silo) / 3)
    on_disk = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert on_disk["test"] == test


def test_a_global_model_run_reports_its_test_figures_and_a_resume_sends_no_second_test(
    tmp_path: Path,
) -> None:
    summary, grid = federate(tmp_path, **{"num-server-rounds": 2})
    test = summary["test"]
    assert "personalized" not in test and test["silos"] == 3
    sent = sent_tests(grid)
    assert len(sent) == 3
    ys, preds = [], []
    for message, reply in sent:
        context = grid.contexts[message.metadata.dst_node_id]
        want = scikit_scores(grid, message, context, {})
        assert dict(reply.content[p.METRICS])["test_confusion"] == want["confusion"]
        ys.append(want["y"])
        preds.append(want["pred"])
    pooled = accuracy_score(np.concatenate(ys), np.concatenate(preds))
    assert test["global"]["pooled_accuracy"] == pytest.approx(pooled)
    again, regrid = federate(tmp_path, **{"num-server-rounds": 2, "resume": True})
    assert sent_tests(regrid) == [] and again["test"] == test


def test_no_test_fraction_no_test_message(tmp_path: Path) -> None:
    summary, grid = federate(tmp_path, **{"num-server-rounds": 1, "silo-test-fraction": 0.0})
    assert summary["test"] is None and sent_tests(grid) == []


def test_a_silo_scores_its_test_rows_once_and_declines_a_second_test(tmp_path: Path) -> None:
    _, grid = federate(tmp_path, **{"num-server-rounds": 1})
    message, _ = sent_tests(grid)[0]
    again = Message(
        content=message.content,
        dst_node_id=message.metadata.dst_node_id,
        message_type=MessageType.EVALUATE,
    )
    again.metadata.__dict__["_message_id"] = "again"
    reply = evaluate_global(again, grid.contexts[message.metadata.dst_node_id])
    info = reply.content[p.INFO]
    assert info["status"] == p.STATUS_DECLINED and info["policy_key"] == "evaluation.test-once"


# -- hostile replies ---------------------------------------------------------------------


def inflated(msg: Message, context: Context) -> Message:
    """An honest reply, except to the test: one more correct row than it has."""
    reply = honest(msg, context)
    if is_test(msg):
        metrics = dict(reply.content[p.METRICS])
        metrics["test_confusion"] = [
            metrics["test_confusion"][0] + 1,
            *metrics["test_confusion"][1:],
        ]
        reply.content[p.METRICS] = MetricRecord(metrics)
    return reply


def test_a_bad_test_reply_costs_its_silo_the_test_and_never_the_run(tmp_path: Path) -> None:
    summary, _ = federate(tmp_path, {101: lambda r: inflated}, **{"num-server-rounds": 1})
    test = summary["test"]
    assert summary["stop_reason"] == "completed" and test["silos"] == 2
    (reason,) = test["left_out"].values()
    assert "breast-cancer-iid-3-s0-p0" in test["left_out"]
    assert reason.startswith("rejected") and "sums to" in reason
    assert "breast-cancer-iid-3-s0-p0" not in test["global"]["by_silo"]


def honest_metrics() -> dict[str, Any]:
    return {
        p.NUM_EXAMPLES: 20,
        "test_held_out": 1,
        "test_examples": 20,
        "test_loss": 0.3,
        "test_accuracy": 0.8,
        "test_balanced_accuracy": 0.8,
        "test_macro_f1": 0.8,
        "test_confusion": [8, 2, 2, 8],
        "global_test_loss": 0.5,
        "global_test_accuracy": 0.6,
        "global_test_balanced_accuracy": 0.6,
        "global_test_macro_f1": 0.6,
        "global_test_confusion": [6, 4, 4, 6],
        "test_layers_round": 1,
    }


def reply_with(metrics: dict[str, Any]) -> Message:
    sent = Message(
        content=RecordDict({p.CONFIG: ConfigRecord({p.TEST: True})}),
        dst_node_id=101,
        message_type=MessageType.EVALUATE,
    )
    sent.metadata.__dict__["_message_id"] = "m"
    content = RecordDict(
        {p.METRICS: MetricRecord(metrics), p.INFO: p.info_record(p.STATUS_OK, silo="s")}
    )
    return Message(content=content, reply_to=sent)


def parse(metrics: dict[str, Any]) -> HeldOutReply | Problem:
    return parse_test(
        reply_with(metrics),
        101,
        rows=60,  # training rows: with 0.2 validation and 0.25 test, about 26 test rows
        num_classes=2,
        val_fraction=0.2,
        test_fraction=0.25,
        judged_round=2,
    )


def test_an_honest_test_reply_is_read() -> None:
    parsed = parse(honest_metrics())
    assert isinstance(parsed, HeldOutReply) and parsed.evaluation is not None
    assert parsed.evaluation.accuracy == 0.8 and parsed.layers_round == 1
    assert parsed.evaluation.global_model is not None
    assert parsed.evaluation.global_model.accuracy == 0.6


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"test_confusion": [9, 2, 2, 8]}, "sums to"),
        ({"test_confusion": [8, 2, 2, 8, 0]}, "2x2"),
        ({"test_confusion": [8, -2, 4, 10]}, "outside"),
        ({"test_loss": float("nan")}, "finite"),
        ({"test_accuracy": 1.5}, "outside"),
        ({"test_examples": 200, "test_confusion": [100, 0, 0, 100]}, "outside"),
        ({"global_test_confusion": [12, 0, 0, 8]}, "different counts"),
        ({"global_test_confusion": [6, 4, 4, 5]}, "sums to"),
        ({"test_layers_round": 2}, "test_layers_round"),
        ({"test_confusion": [8.5, 1.5, 2.0, 8.0]}, "whole number"),
        ({"test_held_out": 2}, "outside"),
    ],
)
def test_a_hostile_test_reply_is_refused(change: dict[str, Any], words: str) -> None:
    parsed = parse({**honest_metrics(), **change})
    assert isinstance(parsed, Problem) and parsed.kind == "rejected", parsed
    assert words in parsed.reason


def test_a_silo_without_a_test_split_is_named_not_scored() -> None:
    sent = reply_with({p.NUM_EXAMPLES: 0, "test_held_out": 0})
    sent.content[p.INFO] = p.info_record(p.STATUS_OK, "too few rows (12)", silo="s")
    parsed = parse_test(
        sent, 101, rows=9, num_classes=2, val_fraction=0.2, test_fraction=0.2, judged_round=2
    )
    assert isinstance(parsed, HeldOutReply) and parsed.evaluation is None
    assert "too few rows" in parsed.reason
