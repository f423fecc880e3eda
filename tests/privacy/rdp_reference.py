"""An accountant written from the papers, to check the Opacus-based one against.

Renyi DP of the sampled Gaussian mechanism at integer orders (Mironov, Talwar and Zhang
2019, eq. for integer alpha): ``A = sum_k C(a, k) (1-q)^(a-k) q^k exp((k^2 - k) / (2 s^2))``
and ``rdp(a) = log(A) / (a - 1)`` per step; steps and runs add order by order. The
conversion to (epsilon, delta) is Balle et al. 2020 (Prop. 12 of "Hypothesis testing
interpretations and Renyi DP"). Only integer orders are searched, so this epsilon is an
upper bound of one searched over a finer grid, and close to it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln, logsumexp

ORDERS = np.arange(2, 257)


def sgm_rdp(*, sample_rate: float, noise_multiplier: float, order: int) -> float:
    """RDP of one step of the sampled Gaussian mechanism at an integer order."""
    q, s, a = sample_rate, noise_multiplier, int(order)
    k = np.arange(a + 1)
    log_binom = gammaln(a + 1) - gammaln(k + 1) - gammaln(a - k + 1)
    with np.errstate(divide="ignore"):
        log_terms = (
            log_binom + (a - k) * math.log1p(-q) + k * math.log(q) + (k * k - k) / (2 * s * s)
        )
    return float(logsumexp(log_terms) / (a - 1))


def epsilon(history: list[tuple[float, float, int]], *, delta: float) -> float:
    """Epsilon of runs of (noise multiplier, sample rate, steps), composed."""
    rdp = np.zeros(len(ORDERS))
    for sigma, q, steps in history:
        rdp += steps * np.array(
            [sgm_rdp(sample_rate=q, noise_multiplier=sigma, order=a) for a in ORDERS]
        )
    a = ORDERS.astype(float)
    eps = rdp - (math.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)
    return float(np.nanmin(eps))
