r"""AdEMAMix (Pagliardini, Ablin & Grangier, 2024), the arithmetic of the official code.

Adam whose numerator adds a second, slow EMA of the gradient (decay b3, not bias-corrected),
weighted by alpha: it keeps gradients of ~1/(1 - b3) steps ago in play. For each parameter
:math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots` (the state's ``count`` after
the update)::

    a   <- alpha * t / alpha_warmup if t < alpha_warmup, else alpha       (if alpha_warmup is set)
    c   <- f^-1((1 - t / T) f(b1) + t / T f(b3)) if t < T, else b3        (if T = beta3_warmup is set;
           f(b) = ln 0.5 / ln(b + 1e-8) - 1, the half-life minus 1, f^-1(x) = 0.5^(1 / (x + 1)))
    m1  <- b1 * m1 + (1 - b1) * g
    m2  <- c * m2 + (1 - c) * g
    v   <- b2 * v + (1 - b2) * g * g
    d   <- sqrt(v) / sqrt(1 - b2^t) + eps
    p   <- p - lr * ((m1 / (1 - b1^t) + a * m2) / d + weight_decay * p)

Paper: Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
arXiv:2409.03137 (2024). Reference: apple/ml-ademamix ``pytorch/ademamix.py`` at commit c3d73c0
(2024-11-14; ``parity_tests/reference.py`` transcribes it); the warmups are
``twinopt.schedules.ademamix_alpha`` / ``ademamix_beta3``, its two schedulers, given as step
counts (``beta3_warmup``, ``alpha_warmup``) as in its PyTorch code.

``optax.contrib.ademamix`` computes these updates with ``alpha=2.0`` (its default is 5.0); its
``b3`` and ``alpha`` schedules (the official repository's optax code passes them as
``b3_scheduler`` / ``alpha_scheduler``) are evaluated at the 0-based count where the official
PyTorch code takes the 1-based step, and that code's beta3 schedule has no 1e-8: with schedules
``s(count)`` that return our ``ademamix_beta3(count + 1.0, ...)`` and ``ademamix_alpha(count + 1.0, ...)``
it computes our warmups too (``parity_tests/test_ademamix_adopt.py``). Its ``eps_root`` is 0 here;
it divides the second moment by ``1 - b2^t`` inside the root, we divide the root, as the official
code: the same value up to rounding. Same arithmetic as ``torch_opt.AdEMAMix``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from twinopt.hparams import check_beta, check_nonneg, check_range
from twinopt.schedules import ademamix_alpha, ademamix_beta3

from ._common import as_dtype, float_count, init_count, square_moment, tree_map, with_weight_decay, zeros_like


class ScaleByAdEMAMixState(NamedTuple):
    count: jnp.ndarray
    m1: optax.Updates  # the fast EMA
    m2: optax.Updates  # the slow EMA
    nu: optax.Updates


def scale_by_ademamix(b1=0.9, b2=0.999, b3=0.9999, alpha=2.0, beta3_warmup=None, alpha_warmup=None,
                      eps=1e-8) -> optax.GradientTransformation:
    """The AdEMAMix direction ``(m1 / (1 - b1^t) + a * m2) / d`` (to be scaled by ``-lr``)."""

    def init(params):
        return ScaleByAdEMAMixState(init_count(), zeros_like(params), zeros_like(params), zeros_like(params))

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = float_count(count)
        a = ademamix_alpha(t, alpha, alpha_warmup, jnp)
        c = ademamix_beta3(t, b3, b1, beta3_warmup, jnp)
        m1 = tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.m1, updates)
        m2 = tree_map(lambda m, g: as_dtype(c, m) * m + as_dtype(1 - c, g) * g, state.m2, updates)
        nu = square_moment(state.nu, updates, b2)
        bc1, bc2_sqrt = 1 - b1**t, jnp.sqrt(1 - b2**t)

        def direction(m1_, m2_, v):
            d = jnp.sqrt(v) / as_dtype(bc2_sqrt, v) + eps
            return (m1_ / as_dtype(bc1, m1_) + as_dtype(a, m2_) * m2_) / d

        return tree_map(direction, m1, m2, nu), ScaleByAdEMAMixState(count, m1, m2, nu)

    return optax.GradientTransformation(init, update)


def ademamix(learning_rate=1e-3, b1: float = 0.9, b2: float = 0.999, b3: float = 0.9999, alpha: float = 2.0,
             beta3_warmup: float | None = None, alpha_warmup: float | None = None, eps: float = 1e-8,
             weight_decay: float = 0.0) -> optax.GradientTransformation:
    """AdEMAMix with decoupled weight decay (``p -= lr * weight_decay * p``, as the official code).

    Args:
      learning_rate: a float >= 0 or an optax schedule of the update count (default 1e-3).
      b1: the decay of the fast EMA, in [0, 1) (default 0.9).
      b2: the decay of the second moment, in [0, 1) (default 0.999).
      b3: the decay of the slow EMA, in [0, 1) (default 0.9999).
      alpha: the weight of the slow EMA, >= 0 (default 2.0, the official code's; optax's is 5.0).
      beta3_warmup: steps over which the slow decay rises from b1 to b3 (linearly in the
        half-life), > 0, or None: no warmup (default).
      alpha_warmup: steps over which alpha rises linearly from 0, > 0, or None: no warmup (default).
      eps: added to the bias-corrected ``sqrt(v)``, >= 0 (default 1e-8).
      weight_decay: decoupled decay, >= 0 (default 0).

    Returns:
      An ``optax.GradientTransformation``; its state is ``(ScaleByAdEMAMixState(count, m1, m2, nu), ...)``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from jax_opt.ademamix import ademamix
      >>> tx = ademamix(learning_rate=0.1, beta3_warmup=1000, alpha_warmup=1000)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0, 0.0])}, tx.init(params), params)
      >>> # Adam's first step, lr * sign(g), plus lr * alpha * m2 / |g| = 0.1 * 0.002 * 0.05 (b3 is 0.95 at t = 1)
      >>> [round(w, 5) for w in optax.apply_updates(params, updates)["w"].tolist()]
      [0.89999, 1.10001, 1.0]

    References:
      Pagliardini et al. 2024, https://arxiv.org/abs/2409.03137; https://github.com/apple/ml-ademamix
    """
    check_nonneg("learning_rate", learning_rate)
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_beta("b3", b3)
    check_nonneg("alpha", alpha)
    check_range("beta3_warmup", beta3_warmup, 0.0, low_open=True)  # None (no warmup) is no number: passes
    check_range("alpha_warmup", alpha_warmup, 0.0, low_open=True)
    check_nonneg("eps", eps)
    check_nonneg("weight_decay", weight_decay)
    direction = scale_by_ademamix(b1, b2, b3, alpha, beta3_warmup, alpha_warmup, eps)
    return with_weight_decay(direction, learning_rate, weight_decay, decoupled=True)
