r"""AdaBelief (Zhuang et al., 2020), the arithmetic of the official ``adabelief-pytorch`` 0.2.1.

Adam whose second moment tracks the squared deviation of the gradient from its running mean
(the "belief" in the observed gradient) instead of the squared gradient. For each parameter
:math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    u   <- -lr * weight_decay * p                  (weight_decouple=True, the default: p * (1 - lr wd))
    u   <- -weight_decay * p                       (weight_decouple=True, fixed_decay=True: p * (1 - wd))
    g   <- g + weight_decay * p                    (weight_decouple=False: L2 penalty)
    m   <- b1 * m + (1 - b1) * g
    s   <- b2 * s + (1 - b2) * (g - m)^2 + eps     (eps stays in the state, as in the official code)
    sm  <- max(sm, s)                              (amsgrad only)
    rectify=False:
        u <- u - lr / (1 - b1^t) * m / (sqrt(s or sm) / sqrt(1 - b2^t) + eps)
    rectify=True (the default), with rho_inf = 2 / (1 - b2) - 1, rho_t = rho_inf - 2 t b2^t / (1 - b2^t):
        rho_t >= 5: r <- sqrt((1 - b2^t) (rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) rho_t (rho_inf - 2)))
                    u <- u - lr r / (1 - b1^t) * m / (sqrt(s) + eps)
        rho_t < 5:  u <- u - lr / (1 - b1^t) * m   (degenerated_to_sgd=True; else no step)
    p   <- p + u

Paper: Zhuang, Tang, Ding, Tatikonda, Dvornek, Papademetris & Duncan, "AdaBelief Optimizer:
Adapting Stepsizes by the Belief in Observed Gradients", NeurIPS 2020.
Reference: juntang-zhuang/Adabelief-Optimizer, ``pypi_packages/adabelief_pytorch0.2.1/
adabelief_pytorch/AdaBelief.py`` (the PyPI package ``adabelief-pytorch`` 0.2.1, repository commit
2855178e), transcribed in ``parity_tests/reference.py``. As there, ``amsgrad`` acts on the
un-rectified step only (the rectified step divides by the current ``s``).

``optax.adabelief`` is the un-rectified step without weight decay or amsgrad, with its ``eps_root``
in the role of the eps added to ``s`` (both default 1e-16): it computes our updates with
``rectify=False`` (up to rounding: it divides ``s`` by ``1 - b2^t`` inside the root, we divide the
root by ``sqrt(1 - b2^t)``, as the official code). Same arithmetic as ``torch_opt.AdaBelief``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from twinopt.hparams import check_beta, check_nonneg

from ._common import (
    as_dtype, descend, float_count, init_count, is_static_zero, square_moment, tree_map, weight_decay_term,
    zeros_like,
)


class ScaleByAdaBeliefState(NamedTuple):
    count: jnp.ndarray
    mu: optax.Updates  # the mean of the gradients (torch: exp_avg)
    nu: optax.Updates  # the mean squared deviation, eps included (torch: exp_avg_var)
    nu_max: optax.Updates | None  # None unless amsgrad (torch: max_exp_avg_var)


def scale_by_adabelief(b1=0.9, b2=0.999, eps=1e-16, amsgrad=False, rectify=True,
                       degenerated_to_sgd=True) -> optax.GradientTransformation:
    """The AdaBelief direction (to be scaled by ``-lr``): the adaptive step, rectified if asked."""

    def init(params):
        nu_max = zeros_like(params) if amsgrad else None
        return ScaleByAdaBeliefState(init_count(), zeros_like(params), zeros_like(params), nu_max)

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = float_count(count)
        mu = tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        residuals = tree_map(lambda g, m: g - m, updates, mu)
        nu = tree_map(lambda s: s + eps, square_moment(state.nu, residuals, b2))
        nu_max = tree_map(jnp.maximum, state.nu_max, nu) if amsgrad else None
        bc1 = 1 - b1**t
        if not rectify:
            inv_root_scale, step_size = 1 / jnp.sqrt(1 - b2**t), 1 / bc1

            def direction(m, v):
                # Times the scalars' reciprocals, as jax_opt.adam (an ulp from the official divisions).
                return (m / (jnp.sqrt(v) * as_dtype(inv_root_scale, v) + eps)) * as_dtype(step_size, m)

            return tree_map(direction, mu, nu_max if amsgrad else nu), ScaleByAdaBeliefState(count, mu, nu, nu_max)

        b2t = b2**t
        n_sma_max = 2 / (1 - b2) - 1
        n_sma = n_sma_max - 2 * t * b2t / (1 - b2t)
        rectified = n_sma >= 5
        ratio = (1 - b2t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max / (n_sma_max - 2)
        # The ratio is negative, or a division by zero, only where the step is not rectified.
        step_size = jnp.sqrt(jnp.where(rectified, ratio, 1.0)) / bc1
        sgd_step_size = 1 / bc1 if degenerated_to_sgd else 0.0

        def direction(m, v):
            adaptive = (m / (jnp.sqrt(v) + eps)) * as_dtype(step_size, m)
            return jnp.where(rectified, adaptive, m * as_dtype(sgd_step_size, m))

        return tree_map(direction, mu, nu), ScaleByAdaBeliefState(count, mu, nu, nu_max)

    return optax.GradientTransformation(init, update)


def adabelief(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-16, weight_decay=0.0, amsgrad=False,
              weight_decouple=True, fixed_decay=False, rectify=True,
              degenerated_to_sgd=True) -> optax.GradientTransformation:
    """AdaBelief with decoupled weight decay (or L2, ``weight_decouple=False``), rectified by default.

    Args:
      learning_rate: a float >= 0 or an optax schedule of the step count.
      b1: the decay of the gradients' mean, in [0, 1).
      b2: the decay of the squared deviation from the mean, in [0, 1).
      eps: >= 0, added to the second moment every step and to its root (the official default 1e-16;
        its README recommends 1e-8 where SGD beats Adam, e.g. CNNs on images).
      weight_decay: >= 0; decoupled (``p * (1 - lr * weight_decay)``) unless ``weight_decouple=False``.
      amsgrad: divide by the running max of the second moment (un-rectified step only, as the
        official code).
      weight_decouple: decoupled decay as AdamW (default True); False: L2, added to the gradient.
      fixed_decay: with ``weight_decouple``, decay by ``p * (1 - weight_decay)`` (not scaled by the
        learning rate).
      rectify: RAdam's rectification of the step (default True).
      degenerated_to_sgd: with ``rectify``, the first steps (rho_t < 5) are bias-corrected momentum
        steps (default True); False: no step until rho_t >= 5.

    Returns:
      An ``optax.GradientTransformation``; its state holds a ``ScaleByAdaBeliefState(count, mu, nu,
      nu_max)``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from jax_opt.adabelief import adabelief
      >>> tx = adabelief(learning_rate=0.1)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0, 0.0])}, tx.init(params), params)
      >>> [round(x, 4) for x in optax.apply_updates(params, updates)["w"].tolist()]  # the first step: p - lr * g
      [0.9, 1.2, 1.0]

    References:
      Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients",
      NeurIPS 2020; juntang-zhuang/Adabelief-Optimizer, ``adabelief-pytorch`` 0.2.1.
    """
    check_nonneg("learning_rate", learning_rate)
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_nonneg("eps", eps)
    check_nonneg("weight_decay", weight_decay)
    direction = scale_by_adabelief(b1, b2, eps, amsgrad, rectify, degenerated_to_sgd)
    if not weight_decouple:
        return optax.chain(weight_decay_term(weight_decay), direction, descend(learning_rate))
    if fixed_decay and not is_static_zero(weight_decay):
        # p * (1 - weight_decay): the decay comes after the learning rate, unscaled by it.
        return optax.chain(direction, descend(learning_rate), optax.add_decayed_weights(-weight_decay))
    return optax.chain(direction, weight_decay_term(weight_decay), descend(learning_rate))
