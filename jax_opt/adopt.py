r"""ADOPT (Taniguchi et al., 2024), the arithmetic of the official code.

Adam with the current gradient normalized by the *previous* second moment, before the momentum
(so the two are independent), and the normalized gradient clipped to ``clip_value_fn(t)``. For
each parameter :math:`p` with gradient :math:`g`, at the update :math:`t = 0, 1, 2, \dots` (the
state's ``count``, the number of earlier updates)::

    g <- g + weight_decay * p                      (L2 penalty, unless decouple; at t = 0 too)
    t = 0:  v <- g * g                             (the first update only initialises v: it is 0)
    t > 0:  n <- g / max(sqrt(v), eps)
            n <- clip(n, -c, c),  c = clip_value_fn(t)   (default t ** 0.25; none if unclipped)
            m <- m + (1 - b1) * (n - m)            (torch's lerp)
            p <- p - lr * (m + weight_decay * p)   (the decay term: decouple only)
            v <- b2 * v + (1 - b2) * g * g

Paper: Taniguchi, Harada, Minegishi, Oshima, Jeong, Nagahara, Iiyama, Suzuki, Iwasawa & Matsuo,
"ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate", NeurIPS 2024.
Reference: iShohei220/adopt ``src/adopt/adopt.py`` at commit 6468572 (2024-12-13), the PyTorch
code (``parity_tests/reference.py`` transcribes it), which decays as ``p - lr * weight_decay * p``
before the step: the same value up to rounding. Its ``clip_lambda`` is ``clip_value_fn`` here
(optax's name); ``unclipped=True`` is ``clip_value_fn=None``, in a form the command line can give.

``optax.contrib.adopt`` computes these updates with its defaults (it evaluates
``clip_value_fn`` at the same 0-based count); it has no weight decay, and its ``nesterov=True``
(not in the official code or the paper) is not offered here. Same arithmetic as
``torch_opt.ADOPT``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from twinopt.hparams import check_beta, check_clip_schedule, check_nonneg
from twinopt.schedules import adopt_clip

from ._common import (
    abs_sq, as_dtype, descend, float_count, init_count, is_static_zero, lerp_moment, square_moment, tree_map,
    weight_decay_term, zeros_like,
)


class ScaleByAdoptState(NamedTuple):
    count: jnp.ndarray
    mu: optax.Updates
    nu: optax.Updates


def clip_parts(x, clip):
    """``clip(x, -clip, clip)``; for complex ``x``, of its real and imaginary parts apart (complex
    numbers have no order; torch clips a complex param's real view so)."""
    if jnp.iscomplexobj(x):
        return jax.lax.complex(jnp.clip(x.real, -clip, clip), jnp.clip(x.imag, -clip, clip))
    return jnp.clip(x, -clip, clip)


def scale_by_adopt(b1=0.9, b2=0.9999, eps=1e-6, clip_value_fn=adopt_clip,
                   decoupled_weight_decay=0.0) -> optax.GradientTransformation:
    """The ADOPT direction ``m`` (plus ``decoupled_weight_decay * p``), 0 at the first update (to be
    scaled by ``-lr``); ``clip_value_fn``: a function of the count, a value, or None (no clipping)."""

    def init(params):
        return ScaleByAdoptState(init_count(), zeros_like(params), zeros_like(params))

    def update(updates, state, params=None):
        first = state.count == 0
        clip = clip_value_fn(float_count(state.count)) if callable(clip_value_fn) else clip_value_fn

        def normalize(g, v):
            n = g / jnp.maximum(jnp.sqrt(v), eps)
            return n if clip is None else clip_parts(n, as_dtype(clip, n.real))

        mu = lerp_moment(state.mu, tree_map(normalize, updates, state.nu), b1)
        direction = mu if is_static_zero(decoupled_weight_decay) else tree_map(
            lambda m, p: m + decoupled_weight_decay * p, mu, params)
        direction = tree_map(lambda d: jnp.where(first, jnp.zeros_like(d), d), direction)
        mu = tree_map(lambda new, old: jnp.where(first, old, new), mu, state.mu)
        nu = tree_map(lambda initial, v: jnp.where(first, initial, v),
                      tree_map(lambda v, g: v + abs_sq(g), state.nu, updates), square_moment(state.nu, updates, b2))
        return direction, ScaleByAdoptState(optax.safe_increment(state.count), mu, nu)

    return optax.GradientTransformation(init, update)


def adopt(learning_rate=1e-3, b1: float = 0.9, b2: float = 0.9999, eps: float = 1e-6,
          clip_value_fn: Callable | None = adopt_clip, weight_decay: float = 0.0, decouple: bool = False, *,
          unclipped: bool = False) -> optax.GradientTransformation:
    """ADOPT with L2 weight decay added to the gradient, or decoupled decay (``decouple``).

    Args:
      learning_rate: a float >= 0 or an optax schedule of the update count (default 1e-3).
      b1: the decay of the momentum of the normalized gradient, in [0, 1) (default 0.9).
      b2: the decay of the second moment, in [0, 1) (default 0.9999).
      eps: the floor of ``sqrt(v)``, >= 0 (default 1e-6).
      clip_value_fn: the clipping value as a function of the 0-based update count, a float array
        (default ``twinopt.schedules.adopt_clip``, ``t ** 0.25``), a number >= 0 (the same at every
        update; under ``optax.inject_hyperparams`` the function's value at each update arrives so),
        or None: no clipping.
      weight_decay: >= 0 (default 0): L2 added to the gradient, or decoupled if ``decouple``.
      decouple: decay as AdamW, ``p -= lr * weight_decay * p`` (default False).
      unclipped: no clipping, as ``clip_value_fn=None`` (default False).

    Returns:
      An ``optax.GradientTransformation``: the chain of the L2 term (identity if none), the
      direction (its state ``ScaleByAdoptState(count, mu, nu)``) and the learning rate.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from jax_opt.adopt import adopt
      >>> tx = adopt(learning_rate=0.1)
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> for g in ([1.0, -2.0, 0.5], [1.0, -2.0, 0.5]):  # the first update only sets v
      ...     updates, state = tx.update({"w": jnp.array(g)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> [round(w, 6) for w in params["w"].tolist()]  # p - lr * (1 - b1) * sign(g)
      [0.99, 1.01, 0.99]

    References:
      Taniguchi et al., NeurIPS 2024, https://arxiv.org/abs/2411.02853; https://github.com/iShohei220/adopt
    """
    check_nonneg("learning_rate", learning_rate)
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_nonneg("eps", eps)
    check_clip_schedule("clip_value_fn", clip_value_fn)
    check_nonneg("weight_decay", weight_decay)
    # The decoupled decay is part of the direction: the first update must not move p at all.
    direction = scale_by_adopt(b1, b2, eps, None if unclipped else clip_value_fn, weight_decay if decouple else 0.0)
    return optax.chain(weight_decay_term(0.0 if decouple else weight_decay), direction, descend(learning_rate))
