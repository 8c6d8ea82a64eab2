r"""NAdam (Dozat, 2016), the arithmetic of torch.optim.NAdam.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`, with the
momentum schedule :math:`\mu_t = b_1 (1 - \tfrac12 \cdot 0.96^{t \psi})`
(:math:`\psi` = ``momentum_decay``) and :math:`\Pi_t = \prod_{i \le t} \mu_i` (``mu_product``)::

    g   <- g + weight_decay * p                    (decoupled_weight_decay=False, if weight_decay != 0)
    Pi  <- Pi * mu_t
    m   <- m + (1 - b1) * (g - m)
    v   <- b2 * v + (1 - b2) * g * g
    d   <- sqrt(v / (1 - b2^t)) + eps
    u   <- (1 - mu_t) / (1 - Pi) * (g / d) + mu_{t+1} / (1 - Pi * mu_{t+1}) * (m / d)
    u   <- u + weight_decay * p                    (decoupled_weight_decay=True, if weight_decay != 0)
    p   <- p - lr * u

torch.optim.NAdam subtracts the two terms one after the other, each with ``lr`` folded into its
coefficient, and decays decoupled as ``p * (1 - lr * weight_decay)`` before the step: the same
value up to rounding (parity within 1e-12 in float64).
Papers: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop (the schedule
with 0.96 and psi = 0.004 is his); Loshchilov & Hutter, "Decoupled Weight Decay
Regularization", ICLR 2019 (``decoupled_weight_decay``).
Reference: ``torch.optim.NAdam``. ``mu_product`` is a scalar array of the default float dtype
(float64 under ``jax_enable_x64``), as torch keeps it in its default dtype.
``optax.nadam`` (= ``optax.adam(nesterov=True)``) uses the constant :math:`\mu_t = b_1`, so
:math:`\Pi_t = b_1^t`: its step is ``lr * ((1 - b1) g / (1 - b1^t) + b1 m / (1 - b1^{t+1})) / d``
with ``d = sqrt(v / (1 - b2^t)) + eps`` (``eps_root=0``), i.e. ours in the limit of a large
``momentum_decay``: with ``momentum_decay=1e4`` the term ``0.5 * 0.96^(1e4 t)`` vanishes against
1 and ``nadam`` reproduces ``optax.nadam`` up to rounding (with weight_decay=0; optax decays
only in ``optax.nadamw``, decoupled, as our ``decoupled_weight_decay=True``).
Same arithmetic as ``torch_opt.NAdam``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from twinopt.hparams import check_beta, check_nonneg

from ._common import (
    as_dtype, float_count, init_count, lerp_moment, square_moment, tree_map, with_weight_decay, zeros_like,
)


class ScaleByNadamState(NamedTuple):
    count: jnp.ndarray
    mu_product: jnp.ndarray  # scalar, product of the momentum schedule so far
    mu: optax.Updates  # first moment (torch: exp_avg)
    nu: optax.Updates  # second moment (torch: exp_avg_sq)


def scale_by_nadam(b1=0.9, b2=0.999, eps=1e-8, momentum_decay=4e-3) -> optax.GradientTransformation:
    """The NAdam direction (to be scaled by ``-lr``): the gradient and the momentum term."""

    def schedule(t):
        return b1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))

    def init(params):
        return ScaleByNadamState(init_count(), jnp.ones([], dtype=float), zeros_like(params), zeros_like(params))

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = float_count(count)
        mu_t, mu_next = schedule(count), schedule(count + 1)
        # Fixed state dtype, whatever the dtype of hyperparameters injected as arrays.
        mu_product = (state.mu_product * mu_t).astype(state.mu_product.dtype)
        mu = lerp_moment(state.mu, updates, b1)
        nu = square_moment(state.nu, updates, b2)
        bc2 = 1 - b2**t
        grad_coef = (1.0 - mu_t) / (1.0 - mu_product)
        exp_avg_coef = mu_next / (1.0 - mu_product * mu_next)

        def direction(g, m, v):
            d = jnp.sqrt(v * as_dtype(1 / bc2, v)) + eps  # a product, not a division: see adam
            return as_dtype(grad_coef, g) * (g / d) + as_dtype(exp_avg_coef, m) * (m / d)

        updates = tree_map(direction, updates, mu, nu)
        return updates, ScaleByNadamState(count, mu_product, mu, nu)

    return optax.GradientTransformation(init, update)


def nadam(learning_rate=2e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
          decoupled_weight_decay=False) -> optax.GradientTransformation:
    """NAdam; ``decoupled_weight_decay=True`` decays as AdamW (NAdamW), else L2."""
    check_nonneg("learning_rate", learning_rate)
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_nonneg("eps", eps)
    check_nonneg("weight_decay", weight_decay)
    check_nonneg("momentum_decay", momentum_decay)
    return with_weight_decay(scale_by_nadam(b1, b2, eps, momentum_decay), learning_rate,
                             weight_decay, decoupled_weight_decay)
