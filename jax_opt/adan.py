r"""Adan, ADAptive Nesterov momentum (Xie et al., 2022), the arithmetic of the official sail-sg/Adan code.

For each parameter :math:`p` with gradient :math:`g` (clipped, see ``max_grad_norm``), at step
:math:`t = 1, 2, \dots`, with :math:`g_{t-1}` the previous step's (clipped) gradient::

    diff <- g - g_{t-1}                            (0 at the first step)
    m    <- b1 * m + (1 - b1) * g
    d    <- b2 * d + (1 - b2) * diff
    n    <- b3 * n + (1 - b3) * (g + b2 * diff)^2
    den  <- sqrt(n) / sqrt(1 - b3^t) + eps
    u    <- m / den / (1 - b1^t) + b2 * d / den / (1 - b2^t)
    no_prox=True:  p <- p - lr * (u + wd * p)                  (= p (1 - lr wd) - lr u, as AdamW)
    no_prox=False: p <- p - lr * (u + wd * p) / (1 + lr * wd)  (= (p - lr u) / (1 + lr wd), the default)

``max_grad_norm > 0`` first multiplies the gradients by ``min(max_grad_norm / (|G| + eps), 1)``,
:math:`|G|` the 2-norm of all the gradients this transformation receives: as the official code
(global over every param group) when one transformation gets all params; under
``optax.multi_transform`` each transformation clips its own part.

The state keeps the negated previous gradient as the official code does (``neg_pre_grad``), so
that it converts to and from ``torch_opt.Adan``'s one to one.

Paper: Xie, Zhou, Li, Lin & Yan, "Adan: Adaptive Nesterov Momentum Algorithm for Faster
Optimizing Deep Models", IEEE TPAMI 2024 (arXiv:2208.06677), Algorithm 1; its betas are the
weights of the new terms, ``1 - `` the code's (and ours).
Reference: sail-sg/Adan ``adan.py`` (commit f0b1b81, unchanged at the repository's 2c65bea),
transcribed in ``parity_tests/reference.py``.

``optax.adan`` weights the gradient difference by ``1 - b2`` where the official code (and the
paper, in its convention) weights it by ``b2``, in ``n`` and in the step; it adds ``eps_root``
(default 1e-8) to ``n`` inside the root, and its weight decay is ours with ``no_prox=True``. It
computes our updates with ``b2=0.5`` on both sides (``1 - b2 = b2``) and its ``eps_root=0``.
Same arithmetic as ``torch_opt.Adan``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from twinopt.hparams import check_beta, check_nonneg

from ._common import (
    abs_sq, as_dtype, descend, float_count, init_count, is_static_zero, learning_rate_at, square_moment, tree_map,
    weight_decay_term, zeros_like,
)


class ScaleByAdanState(NamedTuple):
    count: jnp.ndarray
    mu: optax.Updates  # the mean of the gradients (torch: exp_avg)
    nu: optax.Updates  # the mean of the squared Nesterov term (torch: exp_avg_sq)
    mu_diff: optax.Updates  # the mean of the gradient differences (torch: exp_avg_diff)
    neg_pre_grad: optax.Updates  # minus the previous (clipped) gradient (torch: neg_pre_grad)


def clip_factor(updates, max_grad_norm, eps):
    """The official code's gradient scale ``min(max_grad_norm / (|G| + eps), 1)``; 1 where
    ``max_grad_norm`` is 0 (no clipping)."""
    leaves = jax.tree_util.tree_leaves(updates)
    norm = jnp.sqrt(sum(jnp.sum(abs_sq(g)) for g in leaves))
    clipped = jnp.minimum(max_grad_norm / (norm + eps), 1.0)
    return jnp.where(max_grad_norm > 0, clipped, 1.0)


def scale_by_adan(b1=0.98, b2=0.92, b3=0.99, eps=1e-8, max_grad_norm=0.0) -> optax.GradientTransformation:
    """The Adan direction ``m / den / (1 - b1^t) + b2 d / den / (1 - b2^t)`` (to be scaled by ``-lr``)."""

    def init(params):
        return ScaleByAdanState(init_count(), zeros_like(params), zeros_like(params), zeros_like(params),
                                zeros_like(params))

    def update(updates, state, params=None):
        del params
        if not is_static_zero(max_grad_norm):
            clip = clip_factor(updates, max_grad_norm, eps)
            updates = tree_map(lambda g: g * as_dtype(clip, g), updates)
        first = state.count == 0
        count = optax.safe_increment(state.count)
        t = float_count(count)
        # At the first step the official code sets neg_pre_grad to -g: the difference is 0.
        diffs = tree_map(lambda neg, g: jnp.where(first, -g, neg) + g, state.neg_pre_grad, updates)
        mu = tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        mu_diff = tree_map(lambda d, x: b2 * d + (1 - b2) * x, state.mu_diff, diffs)
        nu = square_moment(state.nu, tree_map(lambda x, g: x * b2 + g, diffs, updates), b3)
        inv_root_scale, step_size, step_size_diff = 1 / jnp.sqrt(1 - b3**t), 1 / (1 - b1**t), b2 / (1 - b2**t)

        def direction(m, d, n):
            # Times the scalars' reciprocals, as jax_opt.adam (an ulp from the official divisions).
            denom = jnp.sqrt(n) * as_dtype(inv_root_scale, n) + eps
            return (m / denom) * as_dtype(step_size, m) + (d / denom) * as_dtype(step_size_diff, d)

        out = tree_map(direction, mu, mu_diff, nu)
        return out, ScaleByAdanState(count, mu, nu, mu_diff, tree_map(jnp.negative, updates))

    return optax.GradientTransformation(init, update)


def _proximal(learning_rate, weight_decay) -> optax.GradientTransformation:
    """Divide by ``1 + lr * weight_decay``: with the decoupled decay before it, ``p + u`` becomes the
    official ``(p - lr * direction) / (1 + lr * weight_decay)``."""
    if callable(learning_rate):
        return optax.scale_by_schedule(lambda count: 1 / (1 + learning_rate_at(learning_rate, count) * weight_decay))
    return optax.scale(1 / (1 + learning_rate * weight_decay))


def adan(learning_rate=1e-3, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, weight_decay=0.0, max_grad_norm=0.0,
         no_prox=False) -> optax.GradientTransformation:
    """Adan with its proximal weight decay (``no_prox=True``: decoupled, as AdamW).

    Args:
      learning_rate: a float >= 0 or an optax schedule of the step count (the official README:
        often 5-10x AdamW's).
      b1: the decay of the gradients' mean, in [0, 1).
      b2: the decay of the gradient differences' mean, in [0, 1); also the weight of the
        difference in the Nesterov term ``g + b2 * diff``.
      b3: the decay of the squared Nesterov term's mean, in [0, 1).
      eps: added to the denominator, >= 0.
      weight_decay: >= 0; the step is divided by ``1 + lr * weight_decay`` (``no_prox=True``: the
        param decays by ``lr * weight_decay * p`` instead).
      max_grad_norm: > 0: clip the 2-norm of all the gradients this transformation receives to it
        (scaled by ``max_grad_norm / (norm + eps)``); 0 (default): no clipping.
      no_prox: decay as AdamW instead of the proximal division.

    Returns:
      An ``optax.GradientTransformation``; its state holds a ``ScaleByAdanState(count, mu, nu,
      mu_diff, neg_pre_grad)``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from jax_opt.adan import adan
      >>> tx = adan(learning_rate=0.1)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0, 0.0])}, tx.init(params), params)
      >>> [round(x, 4) for x in optax.apply_updates(params, updates)["w"].tolist()]  # p - lr * sign(g)
      [0.9, 1.1, 1.0]

    References:
      Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models",
      IEEE TPAMI 2024 (arXiv:2208.06677); sail-sg/Adan ``adan.py`` (commit f0b1b81).
    """
    check_nonneg("learning_rate", learning_rate)
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_beta("b3", b3)
    check_nonneg("eps", eps)
    check_nonneg("weight_decay", weight_decay)
    check_nonneg("max_grad_norm", max_grad_norm)
    direction = scale_by_adan(b1, b2, b3, eps, max_grad_norm)
    # The chain has four entries whatever the decay, so that an injected weight_decay (an array)
    # keeps the plain form's state layout.
    proximal = optax.identity() if no_prox or is_static_zero(weight_decay) else _proximal(learning_rate, weight_decay)
    return optax.chain(direction, weight_decay_term(weight_decay), descend(learning_rate), proximal)
