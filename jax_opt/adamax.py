r"""Adamax (Kingma & Ba, 2015, Section 7.1), the arithmetic of torch.optim.Adamax.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    g   <- g + weight_decay * p                   (L2 penalty, only if weight_decay != 0)
    m   <- m + (1 - b1) * (g - m)
    u   <- max(b2 * u, |g| + eps)                  (exponentially weighted infinity norm)
    p   <- p - lr * (m / u) / (1 - b1^t)

Paper: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Algorithm 2
(which has no eps: ``u <- max(b2 * u, |g|)``; torch adds eps to ``|g|`` inside the max, so
``u >= eps`` and the division is safe even for a gradient that has always been zero).
Reference: ``torch.optim.Adamax`` (reproduced to 1e-12 relative in float64, see parity_tests).
``optax.adamax`` (0.2.8) places eps exactly as here, ``u <- max(|g| + eps, b2 * u)``, and
computes ``(m / (1 - b1^t)) / u``: the same step up to rounding, so ``adamax`` with
``weight_decay=0`` reproduces it (optax has no L2 decay in ``adamax``; ``optax.adamaxw``
decays decoupled instead). Same arithmetic as ``torch_opt.Adamax``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from twinopt.hparams import check_beta, check_nonneg

from ._common import as_dtype, float_count, init_count, lerp_moment, tree_map, with_weight_decay, zeros_like


class ScaleByAdamaxState(NamedTuple):
    count: jnp.ndarray
    mu: optax.Updates  # first moment (torch: exp_avg)
    nu: optax.Updates  # infinity norm (torch: exp_inf)


def scale_by_adamax(b1=0.9, b2=0.999, eps=1e-8) -> optax.GradientTransformation:
    """The Adamax direction ``(m / u) / (1 - b1^t)`` (to be scaled by ``-lr``)."""

    def init(params):
        return ScaleByAdamaxState(init_count(), zeros_like(params), zeros_like(params))

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = float_count(count)
        mu = lerp_moment(state.mu, updates, b1)
        nu = tree_map(lambda u, g: jnp.maximum(b2 * u, jnp.abs(g) + eps), state.nu, updates)
        bc1 = 1 - b1**t
        updates = tree_map(lambda m, u: (m / u) * as_dtype(1 / bc1, m), mu, nu)  # a product: see adam
        return updates, ScaleByAdamaxState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def adamax(learning_rate=2e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0) -> optax.GradientTransformation:
    """Adamax with L2 weight decay added to the gradient."""
    check_nonneg("learning_rate", learning_rate)
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_nonneg("eps", eps)
    check_nonneg("weight_decay", weight_decay)
    return with_weight_decay(scale_by_adamax(b1, b2, eps), learning_rate, weight_decay)
