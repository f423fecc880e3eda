"""The local trainer: ``fit`` and ``evaluate``. It returns metrics and never prints.

One epoch, top to bottom: shuffle (seeded), for each batch augment images when asked
(random crop and flip, :mod:`.augment`) and add Gaussian input noise (training only),
forward under autocast on CUDA, weighted cross-entropy with label smoothing, plus the
FedProx term when asked, backward, clip the gradient norm, step, advance the schedule.

Differential privacy enters through ``privatize``: a callable that receives the model,
optimizer, a DataLoader and the loss, and returns private versions (``privacy.dp``).
Under DP the optimizer clips per-sample gradients itself, so the global clip and AMP
are off, and the FedProx pull towards the global model is applied as a separate,
data-independent step after each update (it touches no data, so it costs no privacy).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .augment import make_augment
from .config import TrainConfig
from .metrics import balanced_accuracy, confusion_matrix, macro_f1, per_class_recall
from .sampling import RESAMPLING_UNDER_DP, resample_classes

# privatize(model, optimizer, loader, criterion) -> (model, optimizer, loader, criterion)
Privatize = Callable[
    [nn.Module, torch.optim.Optimizer, DataLoader, nn.Module],
    tuple[nn.Module, torch.optim.Optimizer, Iterable, nn.Module],
]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for, but no CUDA GPU is available")
    return torch.device(name)


@dataclass
class FitResult:
    metrics: dict[str, float | int | str]
    steps: int  # optimizer steps taken (what a privacy accountant needs)


def fit(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    *,
    class_weights: np.ndarray | None = None,
    privatize: Privatize | None = None,
    proximal_mu: float = 0.0,
    device: torch.device | None = None,
    on_epoch: Callable[[int], None] | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> FitResult:
    """Train ``model`` in place on (X, y); return train metrics and the step count.

    ``proximal_mu`` > 0 adds FedProx's ``mu/2 * ||w - w_start||^2`` with ``w_start``
    the weights the model had on entry (the global model in a federated round).
    ``on_epoch(epoch)`` is called after each epoch (1-based), e.g. for a progress bar.
    ``config.resampling`` balances the classes of (X, y) first: resampling here, where
    only training rows arrive, keeps validation rows from ever being duplicated.
    ``image_shape`` is the data's (channels, height, width) when its rows are images:
    ``config.augment`` needs it, and augments the training batches only.
    """
    augment = make_augment(config.augment, image_shape)  # refused on tabular data
    num_examples = len(y)  # distinct training rows, whatever resampling makes of them
    if config.resampling != "none":
        if privatize is not None:
            raise ValueError(RESAMPLING_UNDER_DP)
        X, y = resample_classes(X, y, mode=config.resampling, seed=config.seed)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    device = device or resolve_device(config.device)
    model.to(device)
    model.train()
    optimizer = _make_optimizer(model, config)
    weight = None
    if class_weights is not None:
        weight = torch.as_tensor(np.asarray(class_weights), dtype=torch.float32, device=device)
    private = privatize is not None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)

    if private:
        loader = DataLoader(
            _BatchedTensors(Xt, yt),
            batch_size=config.batch_size,
            shuffle=True,
            generator=gen,
            collate_fn=_as_batch,
        )
        model, optimizer, loader, criterion = privatize(model, optimizer, loader, criterion)
        steps_per_epoch = max(1, len(loader))  # type: ignore[arg-type]
    else:
        Xt, yt = Xt.to(device), yt.to(device)
        steps_per_epoch = max(1, -(-len(yt) // config.batch_size))
    scheduler = None
    if config.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=steps_per_epoch * config.local_epochs
        )
    use_amp = config.amp and device.type == "cuda" and not private
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    steps, seen, loss_sum, correct = 0, 0, 0.0, 0
    for epoch in range(1, config.local_epochs + 1):
        batches = loader if private else _batches(Xt, yt, config.batch_size, gen)
        for xb, yb in batches:
            # Under DP, Poisson sampling can draw an empty batch; it still steps (the
            # optimizer adds pure noise, and the accountant counts that step).
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if augment is not None:
                xb = augment(xb)
            if config.input_noise_std > 0:
                xb = xb + torch.randn_like(xb) * config.input_noise_std
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = model(xb)
                loss = criterion(logits.float(), yb)
            total = loss
            if anchor is not None and not private:
                total = loss + proximal_mu / 2 * _sq_distance(model, anchor)
            scaler.scale(total).backward()
            if config.max_grad_norm > 0 and not private:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            if anchor is not None and private:
                _proximal_step(model, anchor, proximal_mu, optimizer.param_groups[0]["lr"])
            if scheduler is not None:
                scheduler.step()
            steps += 1
            n = len(yb)
            if n:
                seen += n
                loss_sum += float(loss.detach()) * n
                correct += int((logits.detach().argmax(1) == yb).sum())
        if on_epoch is not None:
            on_epoch(epoch)
    metrics: dict[str, float | int | str] = {
        "train_loss": loss_sum / max(seen, 1),
        "train_accuracy": correct / max(seen, 1),
        "num_examples": num_examples,
        "rows_trained": len(y),
        "steps": steps,
        "epochs": config.local_epochs,
        "seconds": time.perf_counter() - started,
        "device": str(device),
        "amp": int(use_amp),
    }
    return FitResult(metrics, steps)


class _BatchedTensors(TensorDataset):
    """A TensorDataset that hands out a whole batch by indexing its tensors once,
    instead of one item at a time followed by collation (which dominated private
    epochs of small models: the DP loader samples indices per batch)."""

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return [t[index] for t in self.tensors]


def _as_batch(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    return batch


def _batches(
    X: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    # Indexing tensors already on the device avoids DataLoader's per-item overhead,
    # which dominates for the small tabular models federations train.
    order = torch.randperm(len(y), generator=gen).to(y.device)
    for start in range(0, len(y), batch_size):
        idx = order[start : start + batch_size]
        yield X[idx], y[idx]


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # Frozen parameters (requires_grad off) are left out: no weight decay moves them,
    # and under DP Opacus clips and noises only what the optimizer trains.
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def _sq_distance(model: nn.Module, anchor: list[torch.Tensor]) -> torch.Tensor:
    return sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))


@torch.no_grad()
def _proximal_step(model: nn.Module, anchor: list[torch.Tensor], mu: float, lr: float) -> None:
    for p, a in zip(model.parameters(), anchor, strict=True):
        p.sub_(lr * mu * (p - a))


@torch.no_grad()
def predict_proba(
    model: nn.Module, X: np.ndarray, *, batch_size: int = 4096, device: torch.device | None = None
) -> np.ndarray:
    """Class probabilities, in eval mode (no dropout, no noise)."""
    device = device or _model_device(model)
    model.eval()
    out = []
    Xt = torch.as_tensor(X, dtype=torch.float32)
    for start in range(0, len(Xt), batch_size):
        logits = model(Xt[start : start + batch_size].to(device))
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def evaluate(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 4096,
    device: torch.device | None = None,
) -> dict[str, float | list[float]]:
    """Loss (plain cross-entropy), accuracy, balanced accuracy, macro-F1, per-class recall
    and the confusion matrix (rows true, columns predicted)."""
    proba = predict_proba(model, X, batch_size=batch_size, device=device)
    num_classes = proba.shape[1]
    labels = list(range(num_classes))
    y = np.asarray(y)
    picked = np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0)
    pred = proba.argmax(1)
    present = sorted(set(y.tolist()))
    return {
        "loss": float(-np.log(picked).mean()),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": balanced_accuracy(y, pred),
        "macro_f1": macro_f1(y, pred, labels=present),
        "per_class_recall": [float(r) for r in per_class_recall(y, pred, labels)],
        "confusion": confusion_matrix(y, pred, num_classes).tolist(),
        "num_examples": len(y),
    }


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
