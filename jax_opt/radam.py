r"""RAdam (Liu et al., 2020), the arithmetic of torch.optim.RAdam.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`, with
:math:`\rho_\infty = 2 / (1 - b_2) - 1` and
:math:`\rho_t = \rho_\infty - 2 t b_2^t / (1 - b_2^t)` (the length of the approximated SMA)::

    g   <- g + weight_decay * p                    (decoupled_weight_decay=False, if weight_decay != 0)
    m   <- m + (1 - b1) * (g - m)
    v   <- b2 * v + (1 - b2) * g * g
    r   <- sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
    u   <- m / (1 - b1^t) * (sqrt(1 - b2^t) / (sqrt(v) + eps)) * r    if rho_t > 5 (rectified)
           m / (1 - b1^t)                                              otherwise (momentum step)
    u   <- u + weight_decay * p                    (decoupled_weight_decay=True, if weight_decay != 0)
    p   <- p - lr * u

The branch is a ``jnp.where`` on the step count, so the transformation jits. torch.optim.RAdam
multiplies by ``lr`` inside the step and decays decoupled as ``p * (1 - lr * weight_decay)``
before it: the same value up to rounding (parity within 1e-12 in float64).
Papers: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020;
Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019
(``decoupled_weight_decay``).
Reference: ``torch.optim.RAdam``. ``optax.radam`` adds eps to the root of the bias-corrected
second moment, ``r * m_hat / (sqrt(v / (1 - b2^t)) + eps)``, where torch (and we) use
``r * m_hat * sqrt(1 - b2^t) / (sqrt(v) + eps)``: the effective eps differs by the factor
``sqrt(1 - b2^t)``. Its test is ``rho_t >= 5`` (``threshold=5``) where ours is ``rho_t > 5``,
which matters only if ``rho_t`` lands exactly on 5. With ``eps=0`` (and no exact 5) the two
agree up to rounding; no setting of ours reproduces optax for ``eps > 0``. optax has no weight
decay in ``radam``. Same arithmetic as ``torch_opt.RAdam``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from twinopt.hparams import check_beta, check_nonneg

from ._common import (
    as_dtype, float_count, init_count, lerp_moment, square_moment, tree_map, with_weight_decay, zeros_like,
)


class ScaleByRadamState(NamedTuple):
    count: jnp.ndarray
    mu: optax.Updates  # first moment (torch: exp_avg)
    nu: optax.Updates  # second moment (torch: exp_avg_sq)


def scale_by_radam(b1=0.9, b2=0.999, eps=1e-8) -> optax.GradientTransformation:
    """The RAdam direction (to be scaled by ``-lr``): rectified Adam or bias-corrected momentum."""

    def init(params):
        return ScaleByRadamState(init_count(), zeros_like(params), zeros_like(params))

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = float_count(count)
        mu = lerp_moment(state.mu, updates, b1)
        nu = square_moment(state.nu, updates, b2)
        b2t = b2**t
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2t / (1 - b2t)
        rectified = rho_t > 5
        ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        # The ratio is negative (or 0/0) only while not rectified, where r is unused.
        rect = jnp.sqrt(jnp.where(rectified, ratio, 1.0))
        bc1, bc2_sqrt = 1 - b1**t, jnp.sqrt(1 - b2t)

        def direction(m, v):
            m_hat = m * as_dtype(1 / bc1, m)  # a product, not a division: see adam
            adaptive = m_hat * (as_dtype(bc2_sqrt, v) / (jnp.sqrt(v) + eps)) * as_dtype(rect, m)
            return jnp.where(rectified, adaptive, m_hat)

        updates = tree_map(direction, mu, nu)
        return updates, ScaleByRadamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def radam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
          decoupled_weight_decay=False) -> optax.GradientTransformation:
    """RAdam; ``decoupled_weight_decay=True`` decays as AdamW, else L2."""
    check_nonneg("learning_rate", learning_rate)
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_nonneg("eps", eps)
    check_nonneg("weight_decay", weight_decay)
    return with_weight_decay(scale_by_radam(b1, b2, eps), learning_rate, weight_decay,
                             decoupled_weight_decay)
