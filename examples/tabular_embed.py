"""A tabular model with an embedding per categorical feature.

Run config::

    model = "examples.tabular_embed:build"
    model-args = '{"embed_dim": 4, "hidden": 64}'

Every categorical schema feature arrives as a block of one-hot columns (standardized
like the others, so the category's column is the block's one positive value). The model
reads the category as the block's largest column, looks it up in an ``nn.Embedding``,
and feeds the embeddings and the numeric columns to a small MLP. Opacus computes
per-sample gradients of embeddings, so it trains under DP-SGD too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core_training.custom_model import ModelInputs


class TabularEmbed(nn.Module):
    def __init__(self, inputs: ModelInputs, embed_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.blocks = [(b.start, b.size) for b in inputs.categorical]
        self.register_buffer(
            "numeric", torch.tensor(inputs.numeric_columns, dtype=torch.long), persistent=False
        )
        self.embeddings = nn.ModuleList(
            nn.Embedding(size, min(embed_dim, size)) for _, size in self.blocks
        )
        width = len(inputs.numeric_columns) + sum(e.embedding_dim for e in self.embeddings)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, inputs.num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        parts = [x.index_select(1, self.numeric)]
        for (start, size), embedding in zip(self.blocks, self.embeddings, strict=True):
            parts.append(embedding(x[:, start : start + size].argmax(1)))
        return self.mlp(torch.cat(parts, 1))


def build(
    inputs: ModelInputs, *, embed_dim: int = 4, hidden: int = 64, dropout: float = 0.1
) -> nn.Module:
    """The factory: works on any table; without categorical features it is an MLP."""
    return TabularEmbed(inputs, int(embed_dim), int(hidden), float(dropout))
