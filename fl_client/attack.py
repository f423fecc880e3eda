"""Misbehaving silos for robustness experiments (node-config ``attack``).

A SuperNode started with ``--node-config 'attack="..."'`` trains as usual, then sends a
corrupted update instead of its real one. It exists to test the server's defences (reply
validation, robust aggregation) against a real client process; it is off unless a
node's operator sets it, and a run-config cannot turn it on. See docs/deployment.md.
"""

from __future__ import annotations

import numpy as np

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
