"""Misbehaving silos for robustness experiments: fedsilo's ClientApp wrapped in a Flower
mod that reads node-config ``attack``.

A SuperNode started with ``--node-config 'attack="..."'`` and running this app (not the
project's) trains as usual, then sends a corrupted update instead of its real one. It
tests the server's defences (reply validation, robust aggregation) against a real client
process. It is not part of the installed packages: :class:`harness.deploy_local.
LocalDeployment` submits it, as its own app folder (:func:`hostile_app`), when a silo is
given an attack. See docs/deployment.md.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fl_client.app import evaluate_global, query, train
from fl_common import protocol as p

ATTACKS = ("nan", "inf", "shape", "scale:<factor>", "sign-flip")


def attacked(
    update: dict[str, np.ndarray], received: dict[str, np.ndarray], attack: str
) -> dict[str, np.ndarray]:
    """The update a misbehaving silo sends instead of ``update``. ``received`` is the
    global model the round started from.

    - ``nan`` / ``inf``: the first array is filled with NaN / +inf;
    - ``shape``: the first array loses its last row;
    - ``scale:<factor>``: the change to the global model multiplied by ``factor``;
    - ``sign-flip``: the change to the global model reversed (``scale:-1``).
    """
    name, _, arg = attack.strip().partition(":")
    out = {k: np.array(v, copy=True) for k, v in update.items()}
    first = next(iter(out))
    if name in ("nan", "inf") and not arg:
        out[first] = np.full_like(out[first], np.nan if name == "nan" else np.inf)
        return out
    if name == "shape" and not arg:
        out[first] = out[first][:-1]
        return out
    if name == "sign-flip" and not arg:
        factor = -1.0
    elif name == "scale":
        try:
            factor = float(arg)
        except ValueError:
            factor = float("nan")
        if not np.isfinite(factor):
            raise ValueError(f"node-config attack={attack!r}: scale needs a number, scale:10")
    else:
        raise ValueError(f"node-config attack={attack!r} is not one of {', '.join(ATTACKS)}")
    for key, value in out.items():
        if np.issubdtype(value.dtype, np.floating):
            base = received[key].astype(value.dtype)
            out[key] = (base + factor * (value - base)).astype(value.dtype)
    return out


def attack_mod(msg: Message, context: Context, call_next) -> Message:  # type: ignore[no-untyped-def]
    """Runs the real app with ``attack`` taken out of the node-config (the app refuses
    keys it does not know), then corrupts a train reply's arrays as ``attack`` says."""
    attack = str(context.node_config.get("attack", ""))
    if not attack:
        return call_next(msg, context)
    honest = Context(
        run_id=context.run_id,
        node_id=context.node_id,
        node_config={k: v for k, v in context.node_config.items() if k != "attack"},
        state=context.state,
        run_config=context.run_config,
    )
    reply = call_next(msg, honest)
    if msg.metadata.message_type != "train" or reply.has_error():
        return reply
    if not reply.content.array_records.get(p.ARRAYS):  # declined or failed: nothing sent
        return reply
    received = p.record_to_numpy(msg.content[p.ARRAYS])
    sent = attacked(p.record_to_numpy(reply.content[p.ARRAYS]), received, attack)
    reply.content[p.ARRAYS] = p.numpy_to_record(sent)
    return reply


app = ClientApp(mods=[attack_mod])
app.query()(query)
app.train()(train)
app.evaluate()(evaluate_global)


def hostile_app(project: Path, folder: Path) -> Path:
    """An app folder for ``flwr run``: ``project``'s pyproject.toml with this module as
    its ClientApp (the fedsilo packages come from the environment)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (project / "pyproject.toml").read_text()
    text = re.sub(r'clientapp = "[^"]+"', 'clientapp = "fedsilo_attack:app"', text)
    (folder / "pyproject.toml").write_text(text)
    shutil.copy(Path(__file__), folder / "fedsilo_attack.py")
    return folder
