r"""Adagrad (Duchi, Hazan & Singer, 2011), the arithmetic of torch.optim.Adagrad.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    s   <- initial_accumulator_value              (at init)
    g   <- g + weight_decay * p                   (L2 penalty, only if weight_decay != 0)
    clr <- lr / (1 + (t - 1) * lr_decay)          (lr: the schedule's value at step t, if one;
                                                   lr_decay None, the default, or 0: clr = lr)
    s   <- s + g * g
    p   <- p - clr * (g / (sqrt(s) + eps))

Paper: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
Stochastic Optimization", JMLR 12, 2011.
Reference: ``torch.optim.Adagrad`` (reproduced to 1e-12 relative in float64, see parity_tests).
torch.optim fills every accumulator with its constructor's ``initial_accumulator_value``, even
for a param group that sets its own; ``torch_opt.Adagrad`` and this function use the value
given for each group. ``lr_decay`` defaults to None (torch's 0), which
``optax.inject_hyperparams`` leaves static: an array would add a schedule's count to the state.
``optax.adagrad`` differs: it puts eps inside the root (``g / sqrt(s + eps)``, and 0 where
``s = 0``), defaults to ``initial_accumulator_value=0.1`` and ``eps=1e-7``, and has no
``lr_decay`` and no weight decay. No setting reproduces it exactly; with ``eps=0`` on both
sides and ``initial_accumulator_value > 0`` the two agree up to rounding. Same arithmetic as
``torch_opt.Adagrad``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax
from optax import tree_utils as otu

from twinopt.hparams import check_nonneg

from ._common import abs_sq, init_count, is_static_zero, learning_rate_at, tree_map, with_weight_decay


class ScaleByAdagradState(NamedTuple):
    count: jnp.ndarray
    sum: optax.Updates  # torch.optim's name for the accumulated squared gradients


def scale_by_adagrad(initial_accumulator_value=0.0, eps=1e-10) -> optax.GradientTransformation:
    """The Adagrad direction ``g / (sqrt(s) + eps)`` (to be scaled by ``-clr``)."""

    def init(params):
        return ScaleByAdagradState(init_count(), otu.tree_full_like(params, initial_accumulator_value))

    def update(updates, state, params=None):
        del params
        sums = tree_map(lambda s, g: s + abs_sq(g), state.sum, updates)
        updates = tree_map(lambda g, s: g / (jnp.sqrt(s) + eps), updates, sums)
        return updates, ScaleByAdagradState(optax.safe_increment(state.count), sums)

    return optax.GradientTransformation(init, update)


def decayed_learning_rate(learning_rate, lr_decay):
    """torch.optim.Adagrad's ``clr``: ``learning_rate / (1 + count * lr_decay)`` (0-based count)."""
    if is_static_zero(lr_decay):
        return learning_rate
    return lambda count: learning_rate_at(learning_rate, count) / (1 + count * lr_decay)


def adagrad(learning_rate=1e-2, lr_decay=None, weight_decay=0.0, initial_accumulator_value=0.0,
            eps=1e-10) -> optax.GradientTransformation:
    """Adagrad with torch's ``lr_decay`` and L2 weight decay added to the gradient."""
    check_nonneg("learning_rate", learning_rate)
    check_nonneg("lr_decay", lr_decay)
    check_nonneg("weight_decay", weight_decay)
    check_nonneg("initial_accumulator_value", initial_accumulator_value)
    check_nonneg("eps", eps)
    direction = scale_by_adagrad(initial_accumulator_value, eps)
    return with_weight_decay(direction, decayed_learning_rate(learning_rate, lr_decay), weight_decay)
