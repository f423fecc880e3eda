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
