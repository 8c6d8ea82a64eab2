"""Pieces every jax_opt optimizer shares: weight decay, the learning rate, scalars."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import optax

tree_map = jax.tree_util.tree_map


def is_static_zero(value) -> bool:
    """True only for a plain number equal to 0.

    Under ``optax.inject_hyperparams`` hyperparameters arrive as arrays; those keep their
    branch of the computation (adding ``0 * p`` changes nothing), so they must not be
    compared here.
    """
    return isinstance(value, numbers.Number) and value == 0


def weight_decay_term(weight_decay) -> optax.GradientTransformation:
    """``u + weight_decay * p``: placed before a direction it is an L2 penalty on the gradient,
    placed after it (and before the learning rate) it is decoupled decay (AdamW)."""
    if is_static_zero(weight_decay):
        return optax.identity()
    return optax.add_decayed_weights(weight_decay)


def descend(learning_rate) -> optax.GradientTransformation:
    """Multiply by ``-learning_rate`` (a float or a schedule of the step count)."""
    return optax.scale_by_learning_rate(learning_rate)


def init_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def as_dtype(x, like):
    """A scalar computed in the count's precision, cast to the dtype of ``like`` (as torch uses a
    Python double against a float32 tensor)."""
    return jnp.asarray(x, dtype=like.dtype)


def learning_rate_at(learning_rate, count):
    """The learning rate of the update with 0-based index ``count``."""
    return learning_rate(count) if callable(learning_rate) else learning_rate
