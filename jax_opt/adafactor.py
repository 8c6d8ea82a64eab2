r"""Adafactor (Shazeer & Stern, 2018), the arithmetic of torch.optim.Adafactor.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    rho_t   = min(lr, 1 / sqrt(t))                  (relative_step=False: lr)
    alpha_t = max(eps2, RMS(p)) * rho_t             (scale_parameter=False: rho_t; RMS of p before the step)
    w_t     = t ** beta2_decay                       (1 - beta2_t; beta2_decay <= 0)
    p      <- p * (1 - lr * weight_decay)            (decoupled decay, scaled by lr, not by alpha_t)
    p of 2+ dims, factored over two axes R (rows) and C (columns):
        r  <- lerp(r, mean_C(g * g), w_t)            (row_var: p's shape with C of size 1)
        c  <- lerp(c, mean_R(g * g), w_t)            (col_var: p's shape with R of size 1)
        V   = r * c / max(mean_R(r), eps1)
    other params (scalars, vectors, and matrices below min_dim_size_to_factor):
        v  <- lerp(v, g * g, w_t)                    (variance)
        V   = v
    U   = g / sqrt(max(V, eps1^2))
    p  <- p - alpha_t * U / max(1, RMS(U) / d)       (update clipping)

``lerp`` is torch's (``r + w (m - r)`` below ``w = 0.5``, else ``m - (m - r)(1 - w)``, so the first
step takes ``w_1 = 1`` exactly). ``eps1=None`` is the params' machine epsilon; ``add_eps1=True``
adds eps1 to ``g * g`` in both averages instead and clamps nothing (the paper, optax, fairseq and
pytorch_optimizer). R and C are the last two axes (``layout="torch"``, as torch.optim); with
``layout="flax"`` they are the axes a Flax kernel's torch twin has last: Dense ``(in, out)`` is
torch's ``(out, in)`` transposed, so R = 1 (out), C = 0 (in); Conv ``(kh, kw, in, out)`` is torch's
``(out, in, kh, kw)``, so R = 0 (kh), C = 1 (kw). A Flax model then steps as its torch twin, and its
state converts to torch's by the weights' own transposes (``twinopt.convert``); the training
scripts use it (the registry's ``flax_kwargs``).

Paper: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018
(Algorithms 4 and 5; the relative step ``min(1e-2, 1/sqrt(t))``, the parameter scale, the update
clipping d and ``beta2_t = 1 - t^-0.8`` of Section 7).
Reference: ``torch.optim.Adafactor`` (torch 2.13, ``torch/optim/_adafactor.py``), which deviates
from the paper as its docs say: lr caps the relative step (the paper's constant 0.01), lr scales
the decoupled decay, and eps1 clamps the estimates instead of being added to ``g * g``.
``optax.adafactor`` computes these updates with ``relative_step=False`` (a fixed learning rate),
``add_eps1=True, eps=(1e-30, 1e-3)`` and ``min_dim_size_to_factor=128``, except that it rounds
``1 - t^-0.8`` to float32 (about 1e-8 apart, see the registry's peer) and factors a tensor of 3+
dims over its two largest axes (ours: R and C). pytorch_optimizer's ``AdaFactor`` with
``betas=(None, 0.999)`` (no momentum) computes them with ``add_eps1=True, eps=(1e-30, 1e-3)`` and
lr = 1e-2 (its relative step is capped at 1e-2), or ``relative_step=False`` in both.
Same arithmetic as ``torch_opt.Adafactor``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from twinopt.hparams import check_choice, check_eps_pair, check_int, check_nonneg, check_range

from ._common import abs_sq, as_dtype, float_count, init_count, is_static_zero, learning_rate_at, lerp, tree_map

LAYOUTS = ("torch", "flax")


class ScaleByAdafactorState(NamedTuple):
    """Per param: ``row_var`` and ``col_var`` where it is factored (None elsewhere), ``variance``
    where it is not (None elsewhere); torch_opt.Adafactor's state entries of the same names."""

    count: jnp.ndarray
    row_var: optax.Updates
    col_var: optax.Updates
    variance: optax.Updates


def _axes(ndim: int, layout: str) -> tuple[int, int]:
    """(R, C) of a param of ``ndim >= 2`` axes: the axes torch's layout of it has last."""
    if layout == "torch":
        return ndim - 2, ndim - 1

    def flax_axis(k):  # torch's axis k of a Flax kernel (*window, in, out) = torch's (out, in, *window)
        return {0: ndim - 1, 1: ndim - 2}.get(k, k - 2)

    return flax_axis(ndim - 2), flax_axis(ndim - 1)


def factored_axes(shape, min_dim_size_to_factor=0, layout="torch") -> tuple[int, int] | None:
    """The axes (R, C) a param of ``shape`` is factored over, or None: it keeps a full variance
    (fewer than 2 axes, or R or C shorter than ``min_dim_size_to_factor``)."""
    if len(shape) < 2:
        return None
    rows, cols = _axes(len(shape), layout)
    if min(shape[rows], shape[cols]) < min_dim_size_to_factor:
        return None
    return rows, cols


def _reduced(shape, axis):
    return tuple(1 if i == axis else n for i, n in enumerate(shape))


def _norm(x):
    """The 2-norm of ``x`` in the step count's precision (torch_opt takes it as a Python double)."""
    return jnp.sqrt(jnp.sum(abs_sq(x))).astype(jnp.result_type(float))


def _mean_square(g, axis, eps1):
    """torch.optim's ``norm(g, dim=axis, keepdim=True)^2 / n`` (``+ eps1`` when it is added)."""
    mean = jnp.square(jnp.sqrt(jnp.sum(abs_sq(g), axis=axis, keepdims=True))) / g.shape[axis]
    return mean if eps1 is None else mean + eps1


def scale_by_adafactor(learning_rate=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
                       relative_step=True, scale_parameter=True, add_eps1=False, min_dim_size_to_factor=0,
                       layout="torch") -> optax.GradientTransformation:
    """The Adafactor step ``alpha_t * U / max(1, RMS(U) / d) + lr * weight_decay * p``, to be
    subtracted: it has its own step size ``alpha_t`` (the arguments are :func:`adafactor`'s)."""
    eps1, eps2 = eps

    def init(params):
        def factors(p):
            axes = factored_axes(p.shape, min_dim_size_to_factor, layout)
            if axes is None:
                return None, None, jnp.zeros_like(p)
            rows, cols = axes
            return jnp.zeros(_reduced(p.shape, cols), p.dtype), jnp.zeros(_reduced(p.shape, rows), p.dtype), None

        out = tree_map(factors, params)
        return ScaleByAdafactorState(init_count(), *(tree_map(lambda _, o, i=i: o[i], params, out) for i in range(3)))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        count = optax.safe_increment(state.count)
        t = float_count(count)
        lr = learning_rate_at(learning_rate, state.count)
        rho = jnp.minimum(lr, 1 / jnp.sqrt(t)) if relative_step else lr
        weight = t**beta2_decay

        def one(g, p, row_var, col_var, variance):
            e1 = jnp.finfo(g.dtype).eps if eps1 is None else eps1
            added = e1 if add_eps1 else None
            if variance is None:  # factored (decided at init, so that min_dim_size_to_factor may be an array)
                rows, cols = _axes(g.ndim, layout)
                row_var = lerp(row_var, _mean_square(g, cols, added), weight)
                col_var = lerp(col_var, _mean_square(g, rows, added), weight)
                row_mean = jnp.mean(row_var, axis=rows, keepdims=True)
                estimate = row_var * col_var / (row_mean if add_eps1 else jnp.maximum(row_mean, e1))
            else:
                variance = lerp(variance, abs_sq(g) if added is None else abs_sq(g) + added, weight)
                estimate = variance
            u = jax.lax.rsqrt(estimate if add_eps1 else jnp.maximum(estimate, e1 * e1)) * g
            alpha = jnp.maximum(eps2, _norm(p) / p.size**0.5) * rho if scale_parameter else rho
            step = as_dtype(alpha / jnp.maximum(1.0, _norm(u) / (u.size**0.5 * d)), u) * u
            if not is_static_zero(weight_decay):
                step = step + as_dtype(lr * weight_decay, p) * p
            return step, row_var, col_var, variance

        out = tree_map(one, updates, params, state.row_var, state.col_var, state.variance)
        parts = [tree_map(lambda _, o, i=i: o[i], updates, out) for i in range(4)]
        return parts[0], ScaleByAdafactorState(count, *parts[1:])

    return optax.GradientTransformation(init, update)


def adafactor(learning_rate=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
              relative_step=True, scale_parameter=True, add_eps1=False, min_dim_size_to_factor=0,
              layout="torch") -> optax.GradientTransformation:
    """Adafactor with torch.optim.Adafactor's defaults and arithmetic.

    Args:
      learning_rate: a float >= 0 or an optax schedule of the step count: the cap of the relative
        step ``min(lr, 1/sqrt(t))`` (with ``relative_step=False``: the step size itself) and the
        scale of the decoupled weight decay (default 1e-2, the paper's cap).
      beta2_decay: <= 0; the second moments average with weight ``t ** beta2_decay`` at step t
        (``beta2_t = 1 - t^-0.8`` by default).
      eps: ``(eps1, eps2)``: eps1 >= 0 or None (the params' machine epsilon) bounds the estimates
        from below (``add_eps1``: is added to ``g * g``); eps2 >= 0 bounds the parameter scale
        RMS(p) from below.
      d: the update clipping threshold, >= 1: ``U / max(1, RMS(U) / d)``.
      weight_decay: decoupled decay ``p * (1 - lr * weight_decay)``, >= 0.
      relative_step: the step size is ``min(lr, 1/sqrt(t))`` (True, torch) or ``lr`` (optax).
      scale_parameter: the step size is multiplied by ``max(eps2, RMS(p))`` (True, torch and
        optax's ``multiply_by_parameter_scale``).
      add_eps1: add eps1 to ``g * g`` and clamp nothing (the paper, optax), instead of clamping
        the estimates with eps1 (False, torch).
      min_dim_size_to_factor: an integer >= 0; a param of 2+ dims is factored only where both its
        axes R and C are at least this long (0: always, as torch; optax: 128).
      layout: ``"torch"`` (R, C: the last two axes) or ``"flax"`` (the axes of a Flax kernel that
        its torch twin has last; see the module docstring).

    Returns:
      An ``optax.GradientTransformation``; its state is ``(ScaleByAdafactorState(count, row_var,
      col_var, variance), EmptyState())``.

    Example:
      >>> import jax.numpy as jnp, optax, jax_opt
      >>> tx = jax_opt.adafactor(learning_rate=1e-2)
      >>> params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
      >>> grads = {"w": jnp.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]), "b": jnp.array([1.0, -1.0, 2.0])}
      >>> state = tx.init(params)
      >>> state[0].row_var["w"].shape, state[0].col_var["w"].shape, state[0].variance["b"].shape
      ((2, 1), (1, 3), (3,))
      >>> updates, state = tx.update(grads, state, params)
      >>> [round(x, 6) for x in optax.apply_updates(params, updates)["b"].tolist()]  # by lr * RMS(p) = 0.01
      [0.99, 1.01, 0.99]

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018.
      ``torch.optim.Adafactor`` (torch 2.13).
    """
    check_nonneg("learning_rate", learning_rate)
    check_range("beta2_decay", beta2_decay, -math.inf, 0.0)
    check_eps_pair("eps", eps)
    check_range("d", d, 1.0)
    check_nonneg("weight_decay", weight_decay)
    check_int("min_dim_size_to_factor", min_dim_size_to_factor, low=0)
    check_choice("layout", layout, LAYOUTS)
    return optax.chain(
        scale_by_adafactor(learning_rate, beta2_decay, tuple(eps), d, weight_decay, relative_step, scale_parameter,
                           add_eps1, min_dim_size_to_factor, layout),
        optax.scale(-1.0),
    )
