"""Training-time augmentation of image batches (the ``augment`` setting).

``crop-flip`` is the standard augmentation for small images: pad each image by an
eighth of its side (at least one pixel; 4 on 32 x 32) with zeros, crop it back to its
size at a random offset, and flip it horizontally with probability one half. The
images arrive standardized, so the zero padding is the channel's mean colour.
kornia draws the offset and the flip for each image of the batch on its own.

It runs in the trainer on training batches only, after the rows are cleaned: never on
validation or test rows, and never in the statistics a silo shares. Under DP-SGD it is
applied to each sampled batch before the forward pass, so every gradient is still one
image's, clipped and noised as before: the privacy accounting does not change.

Only image-shaped data can be augmented; on tabular data the setting is refused.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import AUGMENTATIONS

Augment = Callable[[torch.Tensor], torch.Tensor]


def augment_problem(kind: str, image_shape: tuple[int, int, int] | None) -> str:
    """Why ``augment = kind`` cannot run on data of ``image_shape`` ("" when it can)."""
    if kind not in AUGMENTATIONS:
        return f"setting 'augment' must be one of {', '.join(AUGMENTATIONS)}, got {kind!r}"
    if kind != "none" and image_shape is None:
        return (
            f"setting 'augment' = {kind!r} needs image data (an [image] schema, or the "
            'built-in digits); this data is a table: set augment = "none"'
        )
    return ""


def make_augment(kind: str, image_shape: tuple[int, int, int] | None) -> Augment | None:
    """The augmentation of flattened image rows ``(batch, C*H*W)``; None for ``none``.
    Raises ValueError for data that cannot be augmented."""
    problem = augment_problem(kind, image_shape)
    if problem:
        raise ValueError(problem)
    if kind == "none":
        return None
    import kornia.augmentation as K  # only where a run augments (import costs ~0.4 s)

    assert image_shape is not None
    channels, height, width = image_shape
    pad = max(1, min(height, width) // 8)
    steps = nn.Sequential(
        K.RandomCrop((height, width), padding=pad, fill=0.0, p=1.0),
        K.RandomHorizontalFlip(p=0.5),
    )

    def augment(rows: torch.Tensor) -> torch.Tensor:
        if len(rows) == 0:  # DP's Poisson sampling can draw an empty batch
            return rows
        images = rows.reshape(len(rows), channels, height, width)
        with torch.no_grad():
            return steps(images).reshape(len(rows), -1)

    return augment
