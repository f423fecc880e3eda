"""The ServerApp's federation over a fake Grid whose nodes run the real ClientApp
handlers in this process: sampling, timeouts, failed, declined and rejected replies,
skipped rounds, the best model, early stopping, resume, and federated validation."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, MetricRecord, RecordDict

sys.path.insert(0, str(Path(__file__).parent))
from fake_grid import (
    FAST,
    Behaviour,
    FakeGrid,
    failing,
    honest,
    silent,
    task_identity,  # noqa: F401 (the autouse fixture)
)

from fl_common import protocol as p
from fl_common.modelfile import load_model
from fl_common.settings import from_run_config
from fl_server.app import Federation
from fl_server.loop import RunStopped
from fl_server.state import load_checkpoint
from privacy.keys import resolve_key


def federate(
    tmp_path: Path,
    nodes: int = 3,
    behaviours: dict[int, Callable[[int], Behaviour]] | None = None,
    **config: Any,
) -> tuple[dict[str, Any], FakeGrid, Federation]:
    run_config = {**FAST, "artifacts-dir": str(tmp_path), "run-name": "r", **config}
    grid = FakeGrid(nodes, run_config, behaviours)
    settings, train = from_run_config(run_config)
    federation = Federation(grid, settings, train, run_id=1)  # type: ignore[arg-type]
    return federation.run(), grid, federation


def node(grid_index: int) -> int:
    return 101 + grid_index


def in_rounds(rounds: set[int], behaviour: Behaviour) -> Callable[[int], Behaviour]:
    return lambda r: behaviour if r in rounds else honest


def history(summary: dict[str, Any]) -> list[dict[str, Any]]:
    import json

    return json.loads((Path(summary["run_dir"]) / "history.json").read_text())


def test_a_federation_samples_trains_and_learns(tmp_path: Path) -> None:
    summary, grid, _ = federate(tmp_path, **{"num-server-rounds": 3, "fraction-train": 0.6})
    rounds = history(summary)[1:]
    assert [h["num_sampled"] for h in rounds] == [2, 2, 2]  # ceil(0.6 * 3)
    assert summary["stop_reason"] == "completed" and summary["rounds_completed"] == 3
    assert history(summary)[-1]["val_accuracy"] > history(summary)[0]["val_accuracy"]
    train_batches = [b for b in grid.pushed if b[0].metadata.message_type == "train"]
    assert [len(b) for b in train_batches] == [2, 2, 2]


def test_a_node_that_does_not_answer_fails_its_round_by_timeout(tmp_path: Path) -> None:
    summary, _, _ = federate(
        tmp_path, behaviours={node(2): in_rounds({1}, silent)}, **{"num-server-rounds": 2}
    )
    first, second = history(summary)[1:]
    assert first["failed"] == {f"node {node(2)}": "no reply within 5s"}
    assert first["num_clients"] == 2 and second["num_clients"] == 3


def test_skipped_rounds_spend_no_patience_and_the_stop_reason_is_the_real_one(
    tmp_path: Path,
) -> None:
    # min-nodes 3: every round in which one node fails aggregates nothing
    summary, _, _ = federate(
        tmp_path,
        behaviours={node(1): in_rounds({2, 3, 4}, failing())},
        **{"num-server-rounds": 5, "min-nodes": 3, "early-stopping-patience": 2},
    )
    rounds = history(summary)[1:]
    assert [h["skipped"] for h in rounds] == [False, True, True, True, False]
    assert summary["stop_reason"] == "completed" and summary["rounds_completed"] == 5
    for skipped in rounds[1:4]:
        assert "improved" not in skipped and "val_loss" not in skipped


def test_every_round_skipped_is_not_a_completed_run(tmp_path: Path) -> None:
    summary, _, _ = federate(
        tmp_path,
        behaviours={node(0): lambda r: failing() if r >= 1 else honest},
        **{"num-server-rounds": 2, "min-nodes": 3},
    )
    assert summary["stop_reason"] == "no-round-trained"


def _declined_budget(msg: Message, context: Context) -> Message:
    info = p.info_record(p.STATUS_DECLINED, "privacy budget exhausted", silo="s")
    return Message(RecordDict({p.INFO: info}), reply_to=msg)


def test_budget_declines_stop_the_run_before_the_next_round(tmp_path: Path) -> None:
    summary, _, _ = federate(
        tmp_path,
        behaviours={node(0): in_rounds({2}, _declined_budget)},
        **{"num-server-rounds": 4, "min-nodes": 1, "max-exhausted-fraction": 0.3},
    )
    assert summary["stop_reason"] == "privacy-budget-exhausted"
    assert summary["rounds_completed"] == 2
    assert history(summary)[2]["declined"] == {f"node {node(0)}": "privacy budget exhausted"}


def _inflated(msg: Message, context: Context) -> Message:
    reply = honest(msg, context)
    metrics = dict(reply.content[p.METRICS])
    metrics[p.NUM_EXAMPLES] = int(metrics[p.NUM_EXAMPLES]) * 1000
    reply.content[p.METRICS] = MetricRecord(metrics)
    return reply


def test_an_inflated_count_is_rejected_and_never_weighs_in_the_average(tmp_path: Path) -> None:
    summary, _, _ = federate(
        tmp_path, behaviours={node(0): in_rounds({1}, _inflated)}, **{"num-server-rounds": 1}
    )
    (entry,) = history(summary)[1:]
    assert sorted(entry["clients"]) == [f"node {node(1)}", f"node {node(2)}"]  # any order
    assert "num-examples" in entry["rejected"][f"node {node(0)}"][0]


def test_the_best_model_file_holds_exactly_the_best_rounds_weights(tmp_path: Path) -> None:
    summary, grid, _ = federate(tmp_path, **{"num-server-rounds": 3})
    best_round = summary["best_round"]
    key = resolve_key(None)
    best = load_model(Path(summary["run_dir"]) / "best-model.bin", key=key).model.state_dict()
    # independent of the server's bookkeeping: what it sent in the round after the best
    train_batches = [b for b in grid.pushed if b[0].metadata.message_type == "train"]
    state, _ = load_checkpoint(Path(summary["run_dir"]) / "checkpoint.bin", key=key)
    sent_after = (
        p.record_to_numpy(train_batches[best_round][0].content[p.ARRAYS])
        if best_round < 3
        else state.current
    )
    for name, tensor in best.items():
        np.testing.assert_array_equal(tensor.numpy(), sent_after[name])
        np.testing.assert_array_equal(state.best[name], sent_after[name])


def test_early_stopping_keeps_the_best_model_not_the_last(tmp_path: Path) -> None:
    summary, _, _ = federate(
        tmp_path,
        **{"num-server-rounds": 8, "early-stopping-patience": 1, "learning-rate": 0.3},
    )
    if summary["stop_reason"] != "early-stopping":
        pytest.skip("this seed improved every round")  # pragma: no cover
    key = resolve_key(None)
    state, _ = load_checkpoint(Path(summary["run_dir"]) / "checkpoint.bin", key=key)
    assert summary["best_round"] == state.round - 1
    assert any(not np.array_equal(state.best[k], state.current[k]) for k in state.best)


def test_resume_restores_the_exact_weights_and_strategy_state(tmp_path: Path) -> None:
    settings = {"strategy": "fedadam", "server-learning-rate": 0.01}
    whole, _, _ = federate(tmp_path / "whole", **settings, **{"num-server-rounds": 3})
    federate(tmp_path / "split", **settings, **{"num-server-rounds": 2})
    resumed, _, _ = federate(
        tmp_path / "split", **settings, **{"num-server-rounds": 3, "resume": True}
    )
    key = resolve_key(None)
    a, _ = load_checkpoint(Path(whole["run_dir"]) / "checkpoint.bin", key=key)
    b, _ = load_checkpoint(Path(resumed["run_dir"]) / "checkpoint.bin", key=key)
    assert a.round == b.round == 3
    for name in a.current:
        np.testing.assert_allclose(a.current[name], b.current[name], rtol=1e-5, atol=1e-8)
    for moment in ("m_t", "v_t"):
        for name in a.strategy_state[moment]:
            np.testing.assert_allclose(
                a.strategy_state[moment][name],
                b.strategy_state[moment][name],
                rtol=1e-5,
                atol=1e-12,
            )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"early-stopping-metric": "val_accuracy"}, "early-stopping-metric"),
        ({"learning-rate": 0.5}, "learning-rate"),
        ({"strategy": "fedprox"}, "strategy"),
    ],
)
def test_resume_refuses_a_change_of_training_with_the_differences(
    tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    federate(tmp_path, **{"num-server-rounds": 1})
    with pytest.raises(RunStopped) as caught:
        federate(tmp_path, **{"num-server-rounds": 1, "resume": True, **change})
    assert caught.value.reason == "resume-mismatch" and named in str(caught.value)


def test_resume_of_a_dp_run_refuses_more_rounds(tmp_path: Path) -> None:
    dp = {"dp": True, "target-epsilon": 3.0}
    federate(tmp_path, **dp, **{"num-server-rounds": 1})
    with pytest.raises(RunStopped, match="num-server-rounds: 1 -> 3"):
        federate(tmp_path, **dp, **{"num-server-rounds": 3, "resume": True})


def test_resume_of_an_early_stopped_run_keeps_its_stop_reason(tmp_path: Path) -> None:
    first, _, _ = federate(
        tmp_path, **{"num-server-rounds": 8, "early-stopping-patience": 1, "learning-rate": 0.3}
    )
    if first["stop_reason"] != "early-stopping":
        pytest.skip("this seed improved every round")  # pragma: no cover
    again, grid, _ = federate(
        tmp_path,
        **{"num-server-rounds": 8, "early-stopping-patience": 1, "learning-rate": 0.3},
        resume=True,
    )
    assert again["stop_reason"] == "early-stopping"
    assert again["rounds_completed"] == first["rounds_completed"]
    assert not [b for b in grid.pushed if b[0].metadata.message_type == "train"]


def test_federated_int8_accuracy_is_measured_on_the_int8_model_with_fp32_alongside(
    tmp_path: Path,
) -> None:
    summary, grid, _ = federate(
        tmp_path,
        validation="federated",
        **{"num-server-rounds": 2, "export-int8": True},
    )
    evaluations = [b for b in grid.pushed if b[0].metadata.message_type == "evaluate"]
    export_batch = evaluations[-1]
    flags = [bool(m.content[p.CONFIG]["int8"]) for m in export_batch]
    nodes = [m.metadata.dst_node_id for m in export_batch]
    assert sorted(flags) == [False] * 3 + [True] * 3  # one message round, both models
    assert sorted(n for n, f in zip(nodes, flags, strict=True) if f) == sorted(set(nodes))
    replies = {
        (m.metadata.dst_node_id, bool(m.content[p.CONFIG]["int8"])): r
        for m, r in grid.answered
        if m in export_batch
    }

    def pooled_accuracy(int8: bool) -> float:
        confusion = sum(
            np.asarray(replies[(n, int8)].content[p.METRICS]["val_confusion"]) for n in set(nodes)
        )
        return float(confusion.reshape(2, 2).trace() / confusion.sum())

    export = summary["export"]
    assert export["int8_accuracy"] == pytest.approx(pooled_accuracy(True))
    assert export["fp32_accuracy"] == pytest.approx(pooled_accuracy(False))
    losses = {
        int8: [replies[(n, int8)].content[p.METRICS]["val_loss"] for n in sorted(set(nodes))]
        for int8 in (False, True)
    }
    assert losses[False] != losses[True]  # the int8 model was evaluated, not the fp32 again


def test_small_silos_validating_on_their_training_rows_do_not_enter_federated_validation(
    tmp_path: Path,
) -> None:
    # quantity skew over 30 silos of breast-cancer: some hold fewer than 10 rows
    summary, grid, _ = federate(
        tmp_path,
        nodes=30,
        validation="federated",
        **{"num-server-rounds": 1, "min-partition-size": 2, "partitioner": "quantity"},
    )
    small = {
        m.metadata.dst_node_id
        for m, r in grid.answered
        if m.metadata.message_type == "train" and r.content[p.METRICS]["val_held_out"] == 0
    }
    assert small, "the partition made no silo too small to hold out rows"
    held_out_examples = sum(
        r.content[p.METRICS]["val_examples"]
        for m, r in grid.answered
        if m.metadata.message_type == "train" and m.metadata.dst_node_id not in small
    )
    assert history(summary)[0]["val_examples"] == held_out_examples


def test_silos_whose_policy_requires_dp_decline_a_plain_run_and_the_summary_says_so(
    tmp_path: Path, isolated_home: Path
) -> None:
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "policy.toml").write_text("[privacy]\nrequire-dp = true\n")
    with pytest.raises(RunStopped) as caught:
        federate(tmp_path, **{"num-server-rounds": 1})
    assert caught.value.reason == "policy-declined"
    import json

    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["stop_reason"] == "policy-declined" and summary["rounds_completed"] == 0
    assert len(summary["policy_declined"]) == 3
    assert all("privacy.require-dp" in r for r in summary["policy_declined"].values())


def test_evaluations_past_a_silos_limit_are_declined_and_the_run_still_finishes(
    tmp_path: Path, isolated_home: Path
) -> None:
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "policy.toml").write_text("[evaluation]\nmax-evaluations-per-run = 1\n")
    summary, grid, _ = federate(
        tmp_path, validation="federated", **{"num-server-rounds": 1, "export-int8": True}
    )
    evaluate_replies = [r for m, r in grid.answered if m.metadata.message_type == "evaluate"]
    declined = [
        r
        for r in evaluate_replies
        if p.INFO in r.content.config_records and r.content[p.INFO]["status"] == "declined"
    ]
    assert len(evaluate_replies) == 9 and len(declined) == 6  # 1 of 3 per silo answered
    assert all(
        r.content[p.INFO]["policy_key"] == "evaluation.max-evaluations-per-run" for r in declined
    )
    assert summary["stop_reason"] == "completed"
    assert summary["export"] is None  # no silo would validate the export


def _ranged_copy_of_breast_cancer(folder: Path) -> tuple[Path, Path]:
    """breast-cancer as a CSV whose schema gives every column a public range."""
    from core_training.data import load_builtin, write_csv
    from core_training.schema import Feature, Schema

    table = load_builtin("breast-cancer")
    low, high = np.nanmin(table.X, 0), np.nanmax(table.X, 0)
    span = high - low
    features = tuple(
        Feature(f.name, bounds=(float(lo - 0.1 * s), float(hi + 0.1 * s)))
        for f, lo, hi, s in zip(table.schema.features, low, high, span, strict=True)
    )
    schema = Schema(table.schema.label, table.schema.classes, features)
    folder.mkdir(parents=True, exist_ok=True)
    csv = write_csv(table, folder / "bc.csv")
    return csv, schema.save(folder / "bc.toml")


def test_dp_statistics_are_spent_from_each_silos_ledger_and_the_run_learns(
    tmp_path: Path, isolated_home: Path
) -> None:
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "policy.toml").write_text('[statistics]\nshare = "dp"\nepsilon = 3.0\n')
    csv, schema = _ranged_copy_of_breast_cancer(tmp_path / "data")
    summary, _, _ = federate(
        tmp_path / "run",
        dataset=str(csv),
        schema=str(schema),
        **{"num-server-rounds": 4},
    )
    assert summary["stop_reason"] == "completed"
    # noisy statistics still standardise well enough to learn (chance is 0.63)
    assert max(h["val_accuracy"] for h in history(summary)) > 0.8
    from privacy.ledger import PrivacyLedger

    ledgers = sorted((isolated_home / "ledgers").glob("*.ledger"))
    assert len(ledgers) == 3
    for path in ledgers:
        ledger = PrivacyLedger.open(
            path, key=resolve_key(None), budget_epsilon=10.0, delta=1e-5, accountant="prv"
        )
        (entry,) = ledger.entries
        assert entry.label == "statistics" and entry.sample_rate == 1.0
        assert 2.7 < ledger.spent_epsilon() <= 3.0 + 0.01  # PRV states it within 0.01


def test_dp_statistics_without_public_ranges_are_declined_naming_the_column(
    tmp_path: Path, isolated_home: Path
) -> None:
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "policy.toml").write_text('[statistics]\nshare = "dp"\n')
    with pytest.raises(RunStopped, match="can take part"):
        federate(tmp_path, **{"num-server-rounds": 1})
    import json

    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    reasons = list(summary["policy_declined"].values())
    assert len(reasons) == 3 and all("statistics.share" in r for r in reasons)
    assert "range = [low, high]" in reasons[0]


@pytest.fixture
def own_ledgers() -> None:
    """Simulated silos are cached per process with their ledger's path, which lies in
    the FEDSILO_HOME of the test that first built them: a DP test needs its own."""
    from fl_client import silo

    silo._simulated_silo_cached.cache_clear()


# DP rounds load Opacus and train under noise: on a busy machine they outlast FAST's 5 s.
SLOW_ROUNDS = {"round-timeout": 300.0}
# Below what any noise reaches for these silos, by either accountant (PRV states epsilon
# to within 0.01, so it never claims less than that).
UNREACHABLE = {"dp": True, "target-epsilon": 0.005, "num-server-rounds": 4}


def start(
    tmp_path: Path, behaviours: dict[int, Callable[[int], Behaviour]] | None = None, **config: Any
) -> tuple[FakeGrid, RunStopped]:
    """A federation expected to stop during set-up: its grid and the stop."""
    run_config = {**FAST, "artifacts-dir": str(tmp_path), "run-name": "r", **config}
    grid = FakeGrid(3, run_config, behaviours)
    settings, train = from_run_config(run_config)
    with pytest.raises(RunStopped) as caught:
        Federation(grid, settings, train, run_id=1).run()  # type: ignore[arg-type]
    return grid, caught.value


def replies_to(grid: FakeGrid, kind: str) -> list[Message]:
    return [reply for msg, reply in grid.answered if msg.metadata.message_type == kind]


def test_an_unreachable_dp_target_is_declined_at_the_query_and_stops_before_round_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    grid, stop = start(tmp_path, **UNREACHABLE)
    assert stop.reason == "dp-target-unreachable"
    assert "target-epsilon 0.005" in str(stop) and "no noise level" in str(stop)
    queries = replies_to(grid, "query")
    assert len(queries) == 3
    for reply in queries:  # a refusal with its reason, not an error from inside training
        assert not reply.has_error()
        assert reply.content[p.INFO]["status"] == p.STATUS_DECLINED
        assert reply.content[p.INFO]["policy_key"] == "dp-target-unreachable"
    assert not replies_to(grid, "train")
    assert not [r for r in caplog.records if r.exc_info]
    import json

    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["stop_reason"] == "dp-target-unreachable"  # never reported as completed
    assert summary["rounds_completed"] == 0


def test_the_server_app_reports_a_stop_before_round_1_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fl_server.app import main

    run_config = {**FAST, "artifacts-dir": str(tmp_path), "run-name": "r", **UNREACHABLE}
    grid = FakeGrid(3, run_config)
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    caplog.set_level("INFO")
    main(grid, context)  # type: ignore[arg-type]
    stops = [r for r in caplog.records if "stopped before round 1" in r.getMessage()]
    assert len(stops) == 1 and "(dp-target-unreachable)" in stops[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]


def _with_run_config(context: Context, run_config: dict[str, Any]) -> Context:
    return Context(
        run_id=context.run_id,
        node_id=context.node_id,
        node_config=context.node_config,
        state=context.state,
        run_config=run_config,
    )


def _lenient(msg: Message, context: Context) -> Message | None:
    """A node that checks no DP plan itself (it believes the target is 4)."""
    return honest(msg, _with_run_config(context, {**context.run_config, "target-epsilon": 4.0}))


def test_the_server_refuses_an_unreachable_dp_plan_from_the_rows_it_was_told(
    tmp_path: Path,
) -> None:
    grid, stop = start(tmp_path, {node(i): lambda r: _lenient for i in range(3)}, **UNREACHABLE)
    assert stop.reason == "dp-target-unreachable"
    queries = replies_to(grid, "query")
    assert [r.content[p.INFO]["status"] for r in queries] == [p.STATUS_OK] * 3
    assert not replies_to(grid, "train")


def test_a_reachable_dp_target_passes_the_plan_check_and_trains(
    tmp_path: Path, own_ledgers: None
) -> None:
    summary, _, _ = federate(
        tmp_path, **{**SLOW_ROUNDS, "dp": True, "target-epsilon": 4.0, "num-server-rounds": 2}
    )
    assert summary["stop_reason"] == "completed"
    assert 0 < summary["epsilon_max"] <= 4.0
    # every epsilon says which accountant produced it: the simulated policy's default
    for entry in history(summary)[1:]:
        assert set(entry["accountant_by_silo"]) == set(entry["epsilon_by_silo"])
        assert set(entry["accountant_by_silo"].values()) == {"prv"}


def test_a_silo_whose_policy_names_rdp_spends_and_reports_by_rdp(
    tmp_path: Path, own_ledgers: None
) -> None:
    from privacy import dp
    from privacy.ledger import PrivacyLedger

    home = tmp_path / "fedsilo-home"
    home.mkdir(exist_ok=True)
    (home / "policy.toml").write_text('[privacy]\naccountant = "rdp"\n')
    summary, _, _ = federate(
        tmp_path, **{**SLOW_ROUNDS, "dp": True, "target-epsilon": 4.0, "num-server-rounds": 1}
    )
    (entry,) = history(summary)[1:]
    assert set(entry["accountant_by_silo"].values()) == {"rdp"}
    ledger_path = next((home / "ledgers").glob("*.ledger"))
    ledger = PrivacyLedger.open(
        ledger_path, key=resolve_key(None), budget_epsilon=10.0, delta=1e-5, accountant="rdp"
    )
    (settled,) = ledger.entries
    rdp = dp.epsilon_of_history(
        [(settled.noise_multiplier, settled.sample_rate, settled.steps)], delta=1e-5
    )
    assert entry["epsilon_by_silo"][settled.label] == pytest.approx(rdp)


def claiming(first: str, later: str = "") -> Behaviour:
    """An honest node that calls itself ``first`` at the statistics step and ``later``
    (when given) in its train replies."""

    def answer(msg: Message, context: Context) -> Message:
        reply = honest(msg, context)
        name = later if later and msg.metadata.message_type == "train" else first
        if not reply.has_error() and p.INFO in reply.content.config_records:
            reply.content[p.INFO]["silo"] = name
        return reply

    return answer


def test_a_node_cannot_report_its_epsilon_under_another_silo_s_name(
    tmp_path: Path, own_ledgers: None
) -> None:
    """Two nodes say they are hospital-a: neither is shown as it. A third, named
    hospital-c at the statistics step, claims hospital-a in its train replies: its
    epsilon stays under the name it was given."""
    summary, _, _ = federate(
        tmp_path,
        behaviours={
            node(0): lambda r: claiming("hospital-a"),
            node(1): lambda r: claiming("hospital-a"),
            node(2): lambda r: claiming("hospital-c", later="hospital-a"),
        },
        **{**SLOW_ROUNDS, "dp": True, "target-epsilon": 4.0, "num-server-rounds": 1},
    )
    (entry,) = history(summary)[1:]
    assert set(entry["epsilon_by_silo"]) == {f"node {node(0)}", f"node {node(1)}", "hospital-c"}
    assert set(entry["accountant_by_silo"]) == set(entry["epsilon_by_silo"])


def test_a_node_asked_to_train_past_a_reachable_target_declines_and_spends_nothing(
    tmp_path: Path, own_ledgers: None
) -> None:
    # The server sees target 4 (the plan passes); the nodes were configured for 0.005 and
    # refuse at train time as well, with the reason and without raising.
    def strict_at_train(msg: Message, context: Context) -> Message | None:
        if msg.metadata.message_type != "train":
            return honest(msg, context)
        strict = {**context.run_config, "target-epsilon": 0.005}
        return honest(msg, _with_run_config(context, strict))

    summary, grid, _ = federate(
        tmp_path,
        behaviours={node(i): lambda r: strict_at_train for i in range(3)},
        **{**SLOW_ROUNDS, "dp": True, "target-epsilon": 4.0, "num-server-rounds": 2},
    )
    trains = replies_to(grid, "train")
    assert len(trains) == 3
    for reply in trains:
        assert reply.content[p.INFO]["status"] == p.STATUS_DECLINED
        assert reply.content[p.INFO]["policy_key"] == "dp-target-unreachable"
    assert summary["stop_reason"] == "policy-declined"
    assert summary["rounds_completed"] == 1 and summary["epsilon_max"] is None


def test_with_server_validation_the_export_is_static_int8_scored_on_the_validation_rows(
    tmp_path: Path,
) -> None:
    summary, _, federation = federate(tmp_path, **{"num-server-rounds": 1, "export-int8": True})
    export = summary["export"]
    assert export["int8_method"] == "static" and export["int8_fallback_reason"] is None
    loaded = load_model(export["path"], key=federation.key)
    assert loaded.quantized and loaded.metadata["int8_method"] == "static"
    X, y = federation.loop.validation
    with torch.no_grad():
        predicted = loaded.model(torch.as_tensor(X, dtype=torch.float32)).argmax(1).numpy()
    assert export["int8_accuracy"] == pytest.approx(float((predicted == y).mean()))
    assert export["int8_bytes"] < export["fp32_bytes"]


def test_with_federated_validation_the_export_is_dynamic_and_the_summary_says_why(
    tmp_path: Path,
) -> None:
    summary, _, _ = federate(
        tmp_path, validation="federated", **{"num-server-rounds": 1, "export-int8": True}
    )
    export = summary["export"]
    assert export["int8_method"] == "dynamic"
    assert "no rows to calibrate on" in export["int8_fallback_reason"]
