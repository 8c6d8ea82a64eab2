r"""Adadelta (Zeiler, 2012), the arithmetic of torch.optim.Adadelta.

For each parameter :math:`p` with gradient :math:`g`::

    g   <- g + weight_decay * p                    (L2 penalty, only if weight_decay != 0)
    v   <- rho * v + (1 - rho) * g * g              (square_avg)
    d   <- sqrt(u + eps) / sqrt(v + eps) * g        (u: acc_delta, before this step)
    u   <- rho * u + (1 - rho) * d * d
    p   <- p - lr * d

Paper: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012
(Algorithm 1; ``lr = 1`` is the paper's method).
Reference: ``torch.optim.Adadelta`` (reproduced to 1e-12 relative in float64, see parity_tests).
``optax.adadelta(learning_rate, rho, eps, weight_decay)`` has the same arithmetic (up to
rounding) and the same rho and eps defaults; its ``learning_rate`` defaults to None, which
skips the learning-rate step and with it the sign flip, so its default update is ``+d``:
pass ``learning_rate=1.0`` to get ours. Same arithmetic as ``torch_opt.Adadelta``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from twinopt.hparams import check_nonneg, check_range

from ._common import init_count, scaled_abs_sq, square_moment, tree_map, with_weight_decay, zeros_like


class ScaleByAdadeltaState(NamedTuple):
    count: jnp.ndarray
    square_avg: optax.Updates
    acc_delta: optax.Updates


def scale_by_adadelta(rho=0.9, eps=1e-6) -> optax.GradientTransformation:
    """The Adadelta step ``d`` (to be scaled by ``-lr``)."""

    def init(params):
        return ScaleByAdadeltaState(init_count(), zeros_like(params), zeros_like(params))

    def update(updates, state, params=None):
        del params
        square_avg = square_moment(state.square_avg, updates, rho)
        updates = tree_map(lambda g, v, u: jnp.sqrt(u + eps) / jnp.sqrt(v + eps) * g,
                           updates, square_avg, state.acc_delta)
        acc_delta = tree_map(lambda u, d: rho * u + scaled_abs_sq(1 - rho, d), state.acc_delta, updates)
        return updates, ScaleByAdadeltaState(optax.safe_increment(state.count), square_avg, acc_delta)

    return optax.GradientTransformation(init, update)


def adadelta(learning_rate=1.0, rho=0.9, eps=1e-6, weight_decay=0.0) -> optax.GradientTransformation:
    """Adadelta with a learning rate (default 1.0, the paper's method) and L2 weight decay."""
    check_nonneg("learning_rate", learning_rate)
    check_range("rho", rho, 0.0, 1.0)
    check_nonneg("eps", eps)
    check_nonneg("weight_decay", weight_decay)
    return with_weight_decay(scale_by_adadelta(rho, eps), learning_rate, weight_decay)
