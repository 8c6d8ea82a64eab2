r"""SGD with optional (Nesterov) momentum, the arithmetic of torch.optim.SGD.

For each parameter :math:`p` with gradient :math:`g`::

    g   <- g + weight_decay * p                      (L2 penalty, only if weight_decay != 0)
    b   <- g                                         (first step: a copy, no dampening)
    b   <- momentum * b + (1 - dampening) * g        (later steps)
    d   <- g + momentum * b   if nesterov  else  b   (d = g when momentum == 0: no buffer)
    p   <- p - lr * d

Papers: Robbins & Monro, "A Stochastic Approximation Method", 1951; Polyak, "Some methods of
speeding up the convergence of iteration methods", 1964 (momentum); Sutskever, Martens, Dahl &
Hinton, "On the importance of initialization and momentum in deep learning", ICML 2013
(the Nesterov form used here).
Reference: ``torch.optim.SGD`` (reproduced to 1e-12 relative in float64, see parity_tests).
A momentum of None (the default) or a plain 0 builds no buffer (torch keeps none). None, as
``optax.sgd``'s default, keeps it so under ``optax.inject_hyperparams``, which turns every
number into an array: the injected form's state is the plain form's. A momentum given as an
array (``inject_hyperparams(jax_opt.sgd)(momentum=0.0)``, to change it later) always keeps one,
so for momentum 0 at run time the direction is ``(1 - dampening) * g`` after the first step
where torch's is ``g`` (the same for ``dampening=0``).
``optax.sgd(learning_rate, momentum, nesterov)`` (its ``optax.trace`` starts from zeros, so
its first step also gives ``b = g``) has the same arithmetic for ``dampening=0`` and
``weight_decay=0``; it has no dampening and no weight decay (chain
``optax.add_decayed_weights`` before it). Same arithmetic as ``torch_opt.SGD``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax
from optax import tree_utils as otu

from twinopt.hparams import check_nesterov, check_nonneg, check_range

from ._common import init_count, is_static_zero, tree_map, with_weight_decay


class ScaleByMomentumState(NamedTuple):
    count: jnp.ndarray  # 0 until the first update: then the buffer is a copy of the gradient
    momentum_buffer: optax.Updates


def scale_by_momentum(momentum=0.9, dampening=0.0, nesterov=False) -> optax.GradientTransformation:
    """torch.optim.SGD's momentum direction ``b`` (or ``g + momentum * b`` with Nesterov)."""

    def init(params):
        return ScaleByMomentumState(init_count(), otu.tree_zeros_like(params))

    def update(updates, state, params=None):
        del params
        first = state.count == 0
        buf = tree_map(
            lambda b, g: jnp.where(first, g, momentum * b + (1 - dampening) * g),
            state.momentum_buffer, updates,
        )
        if nesterov:
            updates = tree_map(lambda g, b: g + momentum * b, updates, buf)
        else:
            updates = buf
        return updates, ScaleByMomentumState(optax.safe_increment(state.count), buf)

    return optax.GradientTransformation(init, update)


def sgd(learning_rate=1e-3, momentum=None, dampening=0.0, nesterov=False,
        weight_decay=0.0) -> optax.GradientTransformation:
    """SGD with L2 weight decay added to the gradient; ``momentum > 0`` adds momentum."""
    check_nonneg("learning_rate", learning_rate)
    check_nonneg("momentum", momentum)
    check_range("dampening", dampening, 0.0, 1.0)
    check_nonneg("weight_decay", weight_decay)
    check_nesterov(nesterov, 0.0 if momentum is None else momentum, dampening)
    direction = optax.identity() if is_static_zero(momentum) else scale_by_momentum(momentum, dampening, nesterov)
    return with_weight_decay(direction, learning_rate, weight_decay)
