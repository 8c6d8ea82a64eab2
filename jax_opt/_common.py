"""Pieces every jax_opt optimizer shares: weight decay, the learning rate, scalars."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import tree_utils as otu

tree_map = jax.tree_util.tree_map


def is_static_zero(value) -> bool:
    """True only for None or a plain number equal to 0.

    Under ``optax.inject_hyperparams`` hyperparameters arrive as arrays; those keep their
    branch of the computation (adding ``0 * p`` changes nothing), so they must not be
    compared here. None, which ``inject_hyperparams`` leaves as it is, is the default of the
    arguments whose zero keeps no state (SGD's momentum, as ``optax.sgd``'s): so the injected
    form of a default optimizer keeps the plain form's state layout.
    """
    return value is None or (isinstance(value, numbers.Number) and value == 0)


def weight_decay_term(weight_decay) -> optax.GradientTransformation:
    """``u + weight_decay * p``: placed before a direction it is an L2 penalty on the gradient,
    placed after it (and before the learning rate) it is decoupled decay (AdamW)."""
    if is_static_zero(weight_decay):
        return optax.identity()
    return optax.add_decayed_weights(weight_decay)


def float_count(count):
    """The step count as a float of the default precision, for schedules and powers ``b ** t``.

    optax schedules divide the count by Python numbers: an int32 count gives a float32 value
    even under ``jax_enable_x64``, which would put float32 rounding into float64 training
    (torch schedulers compute in Python doubles). And ``b ** count`` with a concrete integer
    count (outside jit) multiplies b by itself (``lax.integer_pow``), which is not the float
    power jit and torch use: RAdam's rectification magnifies that difference 1e5 times.
    """
    return jnp.asarray(count, dtype=jnp.result_type(float))


def learning_rate_at(learning_rate, count):
    """The learning rate of the update with 0-based index ``count``."""
    return learning_rate(float_count(count)) if callable(learning_rate) else learning_rate


def descend(learning_rate) -> optax.GradientTransformation:
    """Multiply by ``-learning_rate`` (a float or a schedule of the step count)."""
    if callable(learning_rate):
        return optax.scale_by_schedule(lambda count: -learning_rate_at(learning_rate, count))
    return optax.scale(-learning_rate)


def with_weight_decay(direction, learning_rate, weight_decay, decoupled=False) -> optax.GradientTransformation:
    """``direction`` scaled by ``-learning_rate``, with L2 decay added to the gradient before it
    or, if ``decoupled``, AdamW-style decay added to the direction after it."""
    decay = weight_decay_term(weight_decay)
    if decoupled:
        return optax.chain(direction, decay, descend(learning_rate))
    return optax.chain(decay, direction, descend(learning_rate))


def zeros_like(params):
    """A fresh tree of zeros. Every state entry needs its own: buffers shared between entries
    cannot be donated to a jitted step."""
    return otu.tree_zeros_like(params)


def lerp(start, end, weight):
    """torch's ``start.lerp_(end, weight)``: ``weight`` rounded to the array's dtype, and torch's two
    formulas, ``start + w * (end - start)`` for ``|w| < 0.5``, else ``end - (end - start) * (1 - w)``
    (so that ``w = 1`` gives exactly ``end``, however large ``start``)."""
    if isinstance(weight, numbers.Real):  # the usual case: one formula, chosen now
        w = np.asarray(weight, start.dtype)
        return start + w * (end - start) if abs(w) < 0.5 else end - (end - start) * (1 - w)
    w = jnp.asarray(weight, start.dtype)  # traced (a schedule, or injected as an array): both, then choose
    return jnp.where(jnp.abs(w) < 0.5, start + w * (end - start), end - (end - start) * (1 - w))


def lerp_moment(moment, updates, decay):
    """torch.optim's ``m.lerp_(g, 1 - decay)`` (:func:`lerp`; ``decay = 0`` gives exactly ``g``)."""
    return tree_map(lambda m, g: lerp(m, g, 1 - decay), moment, updates)


def abs_sq(x):
    """``|x|^2``: ``x * x`` for real arrays; for complex ones ``re^2 + im^2`` (optax's
    ``numerics.abs_sq``), so that second moments stay real and non-negative."""
    return x.real * x.real + x.imag * x.imag if jnp.iscomplexobj(x) else x * x


def scaled_abs_sq(scale, x):
    """``scale * |x|^2``, for real ``x`` rounded as torch.optim's ``addcmul_(x, x, value=scale)``:
    ``(scale * x) * x`` (:func:`abs_sq` for complex ``x``)."""
    return scale * abs_sq(x) if jnp.iscomplexobj(x) else scale * x * x


def square_moment(moment, updates, decay):
    """``decay * v + (1 - decay) * |g|^2``: torch.optim's ``mul_(decay).addcmul_(g, g)``."""
    return tree_map(lambda v, g: decay * v + scaled_abs_sq(1 - decay, g), moment, updates)


def init_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def as_dtype(x, like):
    """A scalar computed in the count's precision, cast to the dtype of ``like`` (as torch uses a
    Python double against a float32 tensor)."""
    return jnp.asarray(x, dtype=like.dtype)

