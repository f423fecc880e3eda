"""The weights a silo keeps in a run: what never travels, encrypted in its fedsilo home.

With ``freeze``, ``local-layers`` or ``personalization = "fedbn"``, train messages and
replies carry only the shared weights (``core_training.layers``). The rest arrives once,
in the statistics query, and the silo keeps it:

- ``fixed``: the frozen weights and the initial local layers, as the server sent them
  (the global model's values, which the server never changes);
- ``local``: the silo's own local layers after its last training (at first, the
  initial ones). They never leave the silo.

The file is ``$FEDSILO_HOME/layers/<silo id>-<run>.layers``, where ``<run>`` is the
run's ``run-name`` (so ``resume=true`` continues with the silo's layers) or else its
Flower run id. It is encrypted with the silo's own key, the one its privacy ledger uses
(node-config ``key-file``, else ``FEDSILO_KEY``/``FEDSILO_PASSPHRASE``, else the
default key file), never a key the server names. A copy of the home without the key
reveals nothing, and a file that does not decrypt with the key is refused, not replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from core_training.layers import LayerPlan
from fl_common.settings import RunSettings, fedsilo_home
from privacy import store

KIND = "layers"


class LayersUnavailable(RuntimeError):
    """The silo cannot use (or does not have) its kept weights for this run."""


@dataclass
class KeptLayers:
    fixed: dict[str, torch.Tensor]  # frozen + initial local layers, as the server sent them
    local: dict[str, torch.Tensor]  # this silo's own local layers now

    def complete(self, shared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The silo's whole model: the shared weights received, its own local layers,
        the frozen weights."""
        return {**self.fixed, **self.local, **shared}

    def initial(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with the initial local layers in place of the silo's own: the
        global model, as the server's files hold it."""
        return {**state, **{k: v for k, v in self.fixed.items() if k in self.local}}


def layers_path(silo_id: str, settings: RunSettings, run_id: int) -> Path:
    run = settings.run_name or f"run-{run_id}"
    return fedsilo_home() / "layers" / f"{silo_id}-{run}.{KIND}"


def keep_fixed(
    path: Path, fixed: dict[str, torch.Tensor], plan: LayerPlan, *, key: bytes
) -> KeptLayers:
    """Keep the weights the statistics query sent. Local layers already kept for this
    run (a resumed run asks again) stay when they still fit; otherwise the silo starts
    from the initial ones."""
    if set(fixed) != plan.kept:
        raise LayersUnavailable(
            "the statistics query sent other weights than the run's settings keep on the "
            f"silos ({len(fixed)} sent, {len(plan.kept)} kept)"
        )
    local = {k: fixed[k] for k in plan.local}
    if path.exists():
        earlier = load_kept(path, key=key)
        same = set(earlier.local) == set(local) and all(
            earlier.local[k].shape == local[k].shape for k in local
        )
        if same:
            local = earlier.local
    kept = KeptLayers(fixed, local)
    save_kept(path, kept, key=key)
    return kept


def load_kept(path: Path, *, key: bytes) -> KeptLayers:
    try:
        payload, _ = store.load_state(path, key=key, kind=KIND)
    except store.ArtifactNotFoundError:
        raise LayersUnavailable(
            f"this silo keeps no weights for this run at {path}: the statistics query of "
            "the run did not reach it"
        ) from None
    except store.DecryptionError:
        raise LayersUnavailable(
            f"{path} does not decrypt with this silo's key: its kept weights are refused "
            "(the key changed, or the file is not this silo's)"
        ) from None
    return KeptLayers(dict(payload["fixed"]), dict(payload["local"]))


def save_kept(path: Path, kept: KeptLayers, *, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    store.save_state(path, {"fixed": kept.fixed, "local": kept.local}, key=key, kind=KIND)


def keep_trained(
    path: Path, kept: KeptLayers, state: dict[str, torch.Tensor], *, key: bytes
) -> None:
    """After training: the silo's local layers are the trained ones."""
    kept.local = {k: state[k].detach().cpu().clone() for k in kept.local}
    save_kept(path, kept, key=key)


# -- snapshots for the test evaluation ---------------------------------------------------
#
# With ``silo-test-fraction`` the server scores, once at the end, the model of the round
# it kept, and a silo's personalized model of that round has the local layers the silo
# had then, not its last ones. So after each training the silo also keeps a copy of
# its local layers under the round's number (``<silo>-<run>.snapshots``, same key).
# The model the server judged in round j was validated, on this silo, with the layers of
# its latest training before round j (the initial ones when it had none). Each train
# message names ``keep-layers-since``, the round that judged the best model so far; a
# snapshot older than the one that round needs is dropped, so a silo keeps at most
# the rounds since the best model was judged, plus one (early stopping bounds those).
# The file is deleted once the test evaluation has read it.


def snapshots_path(kept_path: Path) -> Path:
    return kept_path.with_suffix(".snapshots")


def load_snapshots(path: Path, *, key: bytes) -> dict[int, dict[str, torch.Tensor]]:
    """The local layers this silo kept by training round (empty when none yet)."""
    if not path.exists():
        return {}
    try:
        payload, _ = store.load_state(path, key=key, kind=KIND)
    except store.DecryptionError:
        raise LayersUnavailable(
            f"{path} does not decrypt with this silo's key: its snapshots are refused"
        ) from None
    return {int(r): dict(layers) for r, layers in payload["rounds"].items()}


def keep_snapshot(
    path: Path,
    kept: KeptLayers,
    server_round: int,
    *,
    keep_since: int,
    key: bytes,
) -> None:
    """Keep this silo's local layers after training in ``server_round``, and drop those
    no test of a model judged in round ``keep_since`` or later can need."""
    rounds = load_snapshots(path, key=key)
    rounds[server_round] = {k: v.detach().cpu().clone() for k, v in kept.local.items()}
    earlier = [r for r in rounds if r < keep_since]
    floor = max(earlier) if earlier else keep_since
    rounds = {r: v for r, v in rounds.items() if r >= floor}
    path.parent.mkdir(parents=True, exist_ok=True)
    store.save_state(path, {"rounds": {str(r): v for r, v in rounds.items()}}, key=key, kind=KIND)


def layers_before(
    path: Path, kept: KeptLayers, judged_round: int, *, key: bytes
) -> tuple[dict[str, torch.Tensor], int]:
    """The local layers that validated the model judged in ``judged_round``: those of
    this silo's latest training before it (round 0: the initial ones), and that round."""
    rounds = load_snapshots(path, key=key)
    earlier = [r for r in rounds if r < judged_round]
    if not earlier:
        return {k: kept.fixed[k] for k in kept.local}, 0
    latest = max(earlier)
    layers = rounds[latest]
    if set(layers) != set(kept.local):
        raise LayersUnavailable(f"{path}: the snapshot of round {latest} holds other layers")
    return layers, latest


def drop_snapshots(path: Path) -> None:
    path.unlink(missing_ok=True)
