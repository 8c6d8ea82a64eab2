r"""Lion, EvoLved Sign Momentum (Chen et al., 2023), the arithmetic of the official code.

For each parameter :math:`p` with gradient :math:`g`::

    c <- b1 * m + (1 - b1) * g                     (the interpolation the step takes the sign of)
    p <- p - lr * (sign(c) + weight_decay * p)     (decoupled decay, as AdamW)
    m <- b2 * m + (1 - b2) * g                     (the momentum, updated after the step)

Every coordinate moves by exactly ``lr`` (plus decay), so Lion takes a learning rate 3-10x
smaller than AdamW's and a weight decay as much larger (the paper, Section 5).

Paper: Chen, Liang, Huang, Real, Wang, Liu, Pham, Dong, Luong, Hsieh, Lu & Le, "Symbolic
Discovery of Optimization Algorithms", NeurIPS 2023 (Program 1).
Reference: google/automl ``lion/lion_pytorch.py`` (``parity_tests/reference.py`` transcribes it),
which decays as ``p * (1 - lr * weight_decay)`` before the step: the same value up to rounding.
``optax.lion`` computes this update; its default weight decay is 1e-3, ours (as the official
code) 0. Same arithmetic as ``torch_opt.Lion``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from twinopt.hparams import check_beta, check_nonneg

from ._common import tree_map, with_weight_decay, zeros_like


class ScaleByLionState(NamedTuple):
    mu: optax.Updates


def scale_by_lion(b1=0.9, b2=0.99) -> optax.GradientTransformation:
    """The Lion direction ``sign(b1 * m + (1 - b1) * g)`` (to be scaled by ``-lr``)."""

    def init(params):
        return ScaleByLionState(zeros_like(params))

    def update(updates, state, params=None):
        del params
        direction = tree_map(lambda m, g: jnp.sign(b1 * m + (1 - b1) * g), state.mu, updates)
        mu = tree_map(lambda m, g: b2 * m + (1 - b2) * g, state.mu, updates)
        return direction, ScaleByLionState(mu)

    return optax.GradientTransformation(init, update)


def lion(learning_rate=1e-4, b1=0.9, b2=0.99, weight_decay=0.0) -> optax.GradientTransformation:
    """Lion with decoupled weight decay.

    Args:
      learning_rate: a float >= 0 or an optax schedule of the step count.
      b1: the interpolation between momentum and gradient whose sign is the step, in [0, 1).
      b2: the momentum's decay, in [0, 1).
      weight_decay: decoupled decay, >= 0 (the official code's default 0).

    Returns:
      An ``optax.GradientTransformation``; its state is ``(ScaleByLionState(mu), ...)``.

    Example:
      >>> import jax.numpy as jnp, optax, jax_opt
      >>> tx = jax_opt.lion(learning_rate=1e-4, weight_decay=1.0)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0, 0.0])}, tx.init(params), params)
      >>> [round(w, 6) for w in optax.apply_updates(params, updates)["w"].tolist()]
      [0.9998, 1.0, 0.9999]
    """
    check_nonneg("learning_rate", learning_rate)
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_nonneg("weight_decay", weight_decay)
    return with_weight_decay(scale_by_lion(b1, b2), learning_rate, weight_decay, decoupled=True)
