r"""RMSprop (Tieleman & Hinton, 2012), the arithmetic of torch.optim.RMSprop.

For each parameter :math:`p` with gradient :math:`g`::

    g   <- g + weight_decay * p                    (L2 penalty, only if weight_decay != 0)
    v   <- alpha * v + (1 - alpha) * g * g          (square_avg)
    m   <- m + (1 - alpha) * (g - m)                (grad_avg, lerp as torch; centered only)
    a   <- sqrt(v - m * m) + eps   if centered  else  sqrt(v) + eps
    b   <- momentum * b + g / a                     (momentum_buffer; only if momentum > 0)
    p   <- p - lr * b   if momentum > 0  else  p - lr * (g / a)

The learning rate multiplies the buffer, it is not accumulated in it: a learning rate changed
between steps (a schedule, ``optax.inject_hyperparams``) rescales the whole buffer, as in
torch.optim. A momentum of None (the default, as ``optax.rmsprop``'s, which
``optax.inject_hyperparams`` leaves static) or a plain 0 builds no buffer; one given as an
array keeps it (for momentum 0 at run time ``b = g / a``: the same update).
Papers: Tieleman & Hinton, "Lecture 6.5 - RMSProp", COURSERA: Neural Networks for Machine
Learning, 2012; Graves, "Generating Sequences With Recurrent Neural Networks",
arXiv:1308.0850, 2013 (the centered form, Eq. 38-45).
Reference: ``torch.optim.RMSprop`` (reproduced to 1e-12 relative in float64, see parity_tests).
``optax.rmsprop`` differs: ``decay=0.9`` by default (our alpha: 0.99), eps inside the root by
default (``eps_in_sqrt=True``), and the momentum trace accumulates ``lr * g / a``, i.e. the
learning rate sits inside the buffer; no weight decay. With a constant learning rate,
``optax.chain(optax.add_decayed_weights(weight_decay), optax.rmsprop(lr, decay=alpha, eps=eps,
eps_in_sqrt=False, centered=centered, momentum=momentum or None))`` gives our trajectory up
to rounding; under a schedule with momentum it does not. Same arithmetic as
``torch_opt.RMSprop``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from twinopt.hparams import check_nonneg, check_range

from ._common import (
    abs_sq, init_count, is_static_zero, lerp_moment, square_moment, tree_map, with_weight_decay, zeros_like,
)


class ScaleByRmspropState(NamedTuple):
    count: jnp.ndarray
    square_avg: optax.Updates
    momentum_buffer: optax.Updates | None  # None when momentum is a plain 0
    grad_avg: optax.Updates | None  # None unless centered


def scale_by_rmsprop(alpha=0.99, eps=1e-8, momentum=None, centered=False) -> optax.GradientTransformation:
    """The RMSprop direction ``b`` (or ``g / a`` without momentum), to be scaled by ``-lr``."""
    use_momentum = not is_static_zero(momentum)

    def init(params):
        return ScaleByRmspropState(init_count(), zeros_like(params), zeros_like(params) if use_momentum else None,
                                   zeros_like(params) if centered else None)

    def update(updates, state, params=None):
        del params
        square_avg = square_moment(state.square_avg, updates, alpha)
        if centered:
            grad_avg = lerp_moment(state.grad_avg, updates, alpha)
            avg = tree_map(lambda v, m: jnp.sqrt(v - abs_sq(m)) + eps, square_avg, grad_avg)
        else:
            grad_avg = None
            avg = tree_map(lambda v: jnp.sqrt(v) + eps, square_avg)
        if use_momentum:
            buf = tree_map(lambda b, g, a: momentum * b + g / a, state.momentum_buffer, updates, avg)
            updates = buf
        else:
            buf = None
            updates = tree_map(lambda g, a: g / a, updates, avg)
        return updates, ScaleByRmspropState(optax.safe_increment(state.count), square_avg, buf, grad_avg)

    return optax.GradientTransformation(init, update)


def rmsprop(learning_rate=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=None,
            centered=False) -> optax.GradientTransformation:
    """RMSprop with L2 weight decay added to the gradient; options as torch.optim.RMSprop."""
    check_nonneg("learning_rate", learning_rate)
    check_range("alpha", alpha, 0.0, 1.0)
    check_nonneg("eps", eps)
    check_nonneg("weight_decay", weight_decay)
    check_nonneg("momentum", momentum)
    return with_weight_decay(scale_by_rmsprop(alpha, eps, momentum, centered), learning_rate, weight_decay)
