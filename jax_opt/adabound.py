r"""AdaBound and AMSBound (Luo et al., 2019), the arithmetic of the official Luolc/AdaBound code.

Adam whose per-element step size is clipped into bounds that tighten around a final,
SGD-like learning rate. For each parameter :math:`p` with gradient :math:`g`, at step
:math:`t = 1, 2, \dots`, with ``lr`` the current learning rate and ``base_lr`` the initial
one::

    g     <- g + weight_decay * p                 (L2 penalty, only if weight_decay != 0)
    m     <- b1 * m + (1 - b1) * g
    v     <- b2 * v + (1 - b2) * g * g
    vm    <- max(vm, v)                            (AMSBound only: max of the *raw* v)
    d     <- sqrt(v or vm) + eps
    s     <- lr * sqrt(1 - b2^t) / (1 - b1^t)
    f     <- final_lr * lr / base_lr               (a decaying lr also moves the bounds)
    lower <- f * (1 - 1 / (gamma * t + 1))
    upper <- f * (1 + 1 / (gamma * t))
    p     <- p - clip(s / d, lower, upper) * m

The learning rate sits inside the clipping, so it cannot be a trailing
``scale_by_learning_rate``: :func:`scale_by_adabound` computes the whole step and the chain
ends with ``optax.scale(-1.0)``. ``base_lr`` is kept in the state: set in ``init`` from
``learning_rate`` (a schedule's value at step 0), it plays the part of the official code's
``self.base_lrs``. Under ``optax.inject_hyperparams(jax_opt.adabound)(learning_rate=...)``
an injected lr changed between steps therefore moves the bounds as a torch lr scheduler
does with ``torch_opt.AdaBound``. With a warmup schedule, ``base_lr`` is the warmup's start,
whereas torch's is the lr the optimizer was built with: use schedules whose value at step 0
is the torch optimizer's lr (decays, as torch's StepLR/CosineAnnealingLR) to compare them.

Paper: Luo, Xiong, Liu & Sun, "Adaptive Gradient Methods with Dynamic Bound of Learning
Rate", ICLR 2019. Reference: Luolc/AdaBound ``adabound/adabound.py`` (reproduced to 1e-12
relative in float64 against the NumPy transcription in ``parity_tests/reference.py``).
optax has no AdaBound. Differences from the official code: the initial lr is part of the
optimizer state (the official ``base_lrs`` is lost by ``state_dict()``); a float
``learning_rate`` must be > 0 (it divides the bounds) and ``gamma`` in (0, 1) (0 divides by
zero in the upper bound); the official code's deprecated ``add_(scalar, tensor)`` /
``addcmul_(scalar, t1, t2)`` calls compute the same as the operations here.
Same arithmetic as ``torch_opt.AdaBound``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from twinopt.hparams import check_beta, check_nonneg, check_range

from ._common import (
    as_dtype, float_count, init_count, learning_rate_at, square_moment, tree_map, weight_decay_term, zeros_like,
)


class ScaleByAdaBoundState(NamedTuple):
    count: jnp.ndarray
    base_lr: jnp.ndarray  # the learning rate at step 0: the official code's base_lr
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None  # None unless amsbound


def scale_by_adabound(learning_rate=1e-3, b1=0.9, b2=0.999, final_lr=0.1, gamma=1e-3, eps=1e-8,
                      amsbound=False) -> optax.GradientTransformation:
    """The AdaBound step ``clip(s / d, lower, upper) * m``, learning rate included (to be negated)."""

    def init(params):
        count = init_count()
        # Evaluated as the first update evaluates it, so lr / base_lr is exactly 1 there;
        # strongly typed, so the state's types stay the same after every update.
        base_lr = jnp.asarray(learning_rate_at(learning_rate, count), jax.dtypes.canonicalize_dtype(jnp.float64))
        nu_max = zeros_like(params) if amsbound else None
        return ScaleByAdaBoundState(count, base_lr, zeros_like(params), zeros_like(params), nu_max)

    def update(updates, state, params=None):
        del params
        lr = learning_rate_at(learning_rate, state.count)
        count = optax.safe_increment(state.count)
        t = float_count(count)
        mu = tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = square_moment(state.nu, updates, b2)
        nu_max = tree_map(jnp.maximum, state.nu_max, nu) if amsbound else None
        step_size = lr * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        scaled_final_lr = final_lr * lr / state.base_lr
        lower = scaled_final_lr * (1 - 1 / (gamma * t + 1))
        upper = scaled_final_lr * (1 + 1 / (gamma * t))

        def step(m, v):
            d = jnp.real(jnp.sqrt(v)) + eps  # v holds |g|^2: real, though complex for complex params
            return jnp.clip(as_dtype(step_size, d) / d, as_dtype(lower, d), as_dtype(upper, d)) * m

        updates = tree_map(step, mu, nu_max if amsbound else nu)
        return updates, ScaleByAdaBoundState(count, state.base_lr, mu, nu, nu_max)

    return optax.GradientTransformation(init, update)


def adabound(learning_rate=1e-3, b1=0.9, b2=0.999, final_lr=0.1, gamma=1e-3, eps=1e-8,
             weight_decay=0.0, amsbound=False) -> optax.GradientTransformation:
    """AdaBound (``amsbound=True``: AMSBound) with L2 weight decay added to the gradient."""
    check_range("learning_rate", learning_rate, 0.0, low_open=True)
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_nonneg("final_lr", final_lr)
    check_range("gamma", gamma, 0.0, 1.0, low_open=True, high_open=True)
    check_nonneg("eps", eps)
    check_nonneg("weight_decay", weight_decay)
    return optax.chain(
        weight_decay_term(weight_decay),
        scale_by_adabound(learning_rate, b1, b2, final_lr, gamma, eps, amsbound),
        optax.scale(-1.0),
    )


def amsbound(learning_rate=1e-3, b1=0.9, b2=0.999, final_lr=0.1, gamma=1e-3, eps=1e-8,
             weight_decay=0.0) -> optax.GradientTransformation:
    """AMSBound: :func:`adabound` with ``amsbound=True``."""
    return adabound(learning_rate, b1, b2, final_lr, gamma, eps, weight_decay, amsbound=True)
