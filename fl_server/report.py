"""A run's human-readable outputs: history.json, summary.json and curves.png.

They hold metrics only (no weights, no data), so they are plain JSON; they are still
written atomically so a crash never leaves half a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from privacy.store import atomic_write

HISTORY_FILE = "history.json"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"


def plot_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Validation loss and accuracy per round, and epsilon when DP is on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [h for h in history if h.get("val_loss") is not None]
    rounds = [h["round"] for h in rows]
    eps = [(h["round"], h["epsilon_max"]) for h in history if h.get("epsilon_max") is not None]
    panels = 3 if eps else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4))
    axes[0].plot(rounds, [h["val_loss"] for h in rows], marker="o")
    axes[0].set(title="validation loss", xlabel="round", ylabel="loss")
    axes[1].plot(rounds, [h["val_accuracy"] for h in rows], marker="o", color="tab:green")
    axes[1].set(title="validation accuracy", xlabel="round", ylabel="accuracy")
    if eps:
        axes[2].plot([r for r, _ in eps], [e for _, e in eps], marker="o", color="tab:red")
        axes[2].set(title="privacy spent (max over silos)", xlabel="round", ylabel="epsilon")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as handle:
        fig.savefig(handle, dpi=110, format="png")
    plt.close(fig)
    return path


def history_table(history: list[dict[str, Any]]) -> str:
    """The history as a fixed-width text table."""
    cols = [
        ("round", "{:>5}"),
        ("num_clients", "{:>7}"),
        ("num_rejected", "{:>8}"),
        ("train_loss", "{:>10.4f}"),
        ("val_loss", "{:>9.4f}"),
        ("val_accuracy", "{:>8.4f}"),
        ("epsilon_max", "{:>8.3f}"),
        ("seconds", "{:>8.2f}"),
    ]
    heads = [
        "round",
        "clients",
        "rejected",
        "train_loss",
        "val_loss",
        "val_acc",
        "epsilon",
        "seconds",
    ]
    widths = [len(fmt.format(0)) if "d" in fmt or "f" in fmt else 5 for _, fmt in cols]
    lines = [" ".join(h.rjust(max(w, len(h))) for h, w in zip(heads, widths, strict=True))]
    for entry in history:
        cells = []
        for (key, fmt), head, width in zip(cols, heads, widths, strict=True):
            value = entry.get(key)
            text = "-" if value is None else fmt.format(value)
            cells.append(text.strip().rjust(max(width, len(head))))
        lines.append(" ".join(cells))
    return "\n".join(lines)


def plot_importance(
    rows: list[tuple[str, float, float]], path: Path, *, title: str = "permutation importance"
) -> Path:
    """A horizontal bar chart of (feature, mean drop, std), most important on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(6.4, max(2.4, 0.28 * len(rows) + 1.2)))
    ax.barh([r[0] for r in rows], [r[1] for r in rows], xerr=[r[2] for r in rows], color="tab:blue")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set(title=title, xlabel="score drop when the feature is shuffled")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        fig.savefig(handle, dpi=110, format="png")
    plt.close(fig)
    return path
