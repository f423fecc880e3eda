"""The run's test evaluation: the kept model scored once on the silos' test rows.

With ``silo-test-fraction`` every silo holds test rows that nothing in the run touched
(``fl_client.silo``). When the run has ended, and so its best round is known (early
stopping included), the server sends one evaluate message marked ``test`` to every
taking part node, with the kept model's shared weights, the round it was kept from
and the round whose replies validated it (with local layers, the silo scores its
personalized model as it was then). Each reply passes :func:`replies.parse_test`; a
node that fails, declines, has no test split or sends a bad reply is left out and named.

The figures go to ``summary.json`` under ``test``: ``global`` and, with local layers,
``personalized``, each pooled over the silos' test rows (from the summed confusion
counts) and as the mean of the silos' own accuracies. The result is kept in the
checkpoint, so a resumed run never scores its test rows a second time.
"""

from __future__ import annotations

from logging import INFO, WARNING
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.supercore import log

from fl_common import protocol as p

from .loop import RoundLoop, pool_evaluations
from .replies import Evaluation, HeldOutReply, Problem, parse_test
from .state import RunState


def judged_round(state: RunState, model_round: int) -> int:
    """The round whose replies validated the model of ``model_round`` (the one after it
    when none is recorded)."""
    return state.judged_in.get(model_round, model_round + 1)


def test_nodes(state: RunState, connected: list[int]) -> list[int]:
    """Every connected node that took part: it reported rows and neither its policy
    nor its schema left it out (a node whose budget ran out can still be scored)."""
    book = state.nodes
    out = set(book.policy_declined) | book.other_schema
    return [n for n in connected if n in book.rows and n not in out]


def run_test(loop: RoundLoop, state: RunState) -> dict[str, Any]:
    """Send the one test message to every taking part node; the figures it brought."""
    settings = loop.settings
    model_round = state.early_stopping.best_round
    judged = judged_round(state, model_round)
    nodes = test_nodes(state, loop.transport.wait_for_nodes())
    config = ConfigRecord(
        {p.TEST: True, p.MODEL_ROUND: model_round, p.JUDGED_ROUND: judged, "int8": False}
    )
    messages = [
        Message(
            content=RecordDict(
                {
                    p.ARRAYS: p.numpy_to_record(loop.plan.shared(state.best)),
                    p.PREP: p.numpy_to_record(state.prep),
                    p.CONFIG: config,
                }
            ),
            dst_node_id=n,
            message_type=MessageType.EVALUATE,
        )
        for n in nodes
    ]
    scored: list[HeldOutReply] = []
    left_out: dict[str, str] = {}
    for node, reply in loop.transport.ask(messages).items():
        parsed = (
            parse_test(
                reply,
                node,
                rows=state.nodes.rows.get(node),
                num_classes=loop.num_classes,
                val_fraction=settings.local_val_fraction,
                test_fraction=settings.silo_test_fraction,
                judged_round=judged,
            )
            if reply is not None
            else Problem(node, "failed", f"no reply within {settings.round_timeout:g}s")
        )
        name = state.nodes.label(node)
        if isinstance(parsed, Problem):
            left_out[name] = f"{parsed.kind}: {parsed.reason}"
        elif parsed.evaluation is None:
            left_out[name] = f"no test split: {parsed.reason}"
        else:
            scored.append(parsed)
            continue
        log(WARNING, "Test evaluation: %s left out (%s)", name, left_out[name])
    scored.sort(key=lambda r: r.node)
    personal = settings.personal
    out: dict[str, Any] = {
        "fraction": settings.silo_test_fraction,
        "round": model_round,
        "judged_round": judged,
        "silos": len(scored),
        "left_out": dict(sorted(left_out.items())),
    }
    label = state.nodes.label
    found = [(label(r.node), r.evaluation) for r in scored if r.evaluation is not None]
    if personal:
        out["personalized"] = figures(found)
        out["global"] = figures([(n, e.global_model) for n, e in found if e.global_model])
        out["layers_round_by_silo"] = {label(r.node): r.layers_round for r in scored}
    else:
        out["global"] = figures(found)
    log(
        INFO,
        "Test evaluation of round %d on %d silo(s): %s",
        model_round,
        len(scored),
        ", ".join(
            f"{k} pooled accuracy {v['pooled_accuracy']:.4f}"
            for k, v in out.items()
            if k in ("global", "personalized") and v["pooled_accuracy"] is not None
        )
        or "no figures",
    )
    return out


def figures(found: list[tuple[str, Evaluation]]) -> dict[str, Any]:
    """Pooled test figures (from the summed confusion counts) and each silo's accuracy."""
    pooled = pool_evaluations([e for _, e in found])
    by_silo = {name: e.accuracy for name, e in found}
    return {
        "pooled_accuracy": pooled.get("val_accuracy"),
        "pooled_balanced_accuracy": pooled.get("val_balanced_accuracy"),
        "pooled_macro_f1": pooled.get("val_macro_f1"),
        "loss": pooled.get("val_loss"),
        "examples": pooled.get("val_examples", 0),
        "mean_accuracy": sum(by_silo.values()) / len(by_silo) if by_silo else None,
        "by_silo": by_silo,
    }
