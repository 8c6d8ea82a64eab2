r"""Adam and AMSGrad (Kingma & Ba, 2015; Reddi et al., 2018), the arithmetic of torch.optim.Adam.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    g   <- g + weight_decay * p                   (L2 penalty, only if weight_decay != 0)
    m   <- m + (1 - b1) * (g - m)
    v   <- b2 * v + (1 - b2) * g * g
    vm  <- max(vm, v)                              (AMSGrad only: max of the *raw* v)
    d   <- sqrt(v or vm) / sqrt(1 - b2^t) + eps
    p   <- p - lr * (m / d) / (1 - b1^t)

Papers: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad).
Reference: ``torch.optim.Adam`` (reproduced to 1e-12 relative in float64, see parity_tests).
``optax.adam`` has the same arithmetic (eps outside the root, ``eps_root=0``); weight decay
there is not part of ``optax.adam``. ``optax.amsgrad`` keeps the max of the bias-corrected
:math:`v / (1 - b2^t)` instead of the raw :math:`v`: the two coincide only for ``b2 = 0``.
Same arithmetic as ``torch_opt.Adam``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from twinopt.hparams import check_beta, check_nonneg

from ._common import (
    as_dtype, float_count, init_count, lerp_moment, square_moment, tree_map, with_weight_decay, zeros_like,
)


class ScaleByAdamState(NamedTuple):
    count: jnp.ndarray
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None  # None unless amsgrad


def scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, amsgrad=False) -> optax.GradientTransformation:
    """The Adam direction ``(m / d) / (1 - b1^t)`` (to be scaled by ``-lr``)."""

    def init(params):
        nu_max = zeros_like(params) if amsgrad else None
        return ScaleByAdamState(init_count(), zeros_like(params), zeros_like(params), nu_max)

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = float_count(count)
        mu = lerp_moment(state.mu, updates, b1)
        nu = square_moment(state.nu, updates, b2)
        nu_max = tree_map(jnp.maximum, state.nu_max, nu) if amsgrad else None
        bc1, bc2_sqrt = 1 - b1**t, jnp.sqrt(1 - b2**t)

        def direction(m, v):
            # Times the scalars' reciprocals: XLA keeps x / s a division per element, which costs
            # the step 20% on a CPU (rounding differs from torch's by an ulp, see parity_tests).
            d = jnp.sqrt(v) * as_dtype(1 / bc2_sqrt, v) + eps
            return (m / d) * as_dtype(1 / bc1, m)

        updates = tree_map(direction, mu, nu_max if amsgrad else nu)
        return updates, ScaleByAdamState(count, mu, nu, nu_max)

    return optax.GradientTransformation(init, update)


def adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
         amsgrad=False) -> optax.GradientTransformation:
    """Adam (``amsgrad=True``: AMSGrad) with L2 weight decay added to the gradient."""
    check_nonneg("learning_rate", learning_rate)
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_nonneg("eps", eps)
    check_nonneg("weight_decay", weight_decay)
    return with_weight_decay(scale_by_adam(b1, b2, eps, amsgrad), learning_rate, weight_decay)


def amsgrad(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0) -> optax.GradientTransformation:
    """AMSGrad: :func:`adam` with ``amsgrad=True``."""
    return adam(learning_rate, b1, b2, eps, weight_decay, amsgrad=True)
