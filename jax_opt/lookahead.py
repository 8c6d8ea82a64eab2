r"""Lookahead (Zhang et al., 2019), Algorithm 1, around any optax transformation.

The inner transformation updates the fast weights :math:`p` every step; the slow weights
:math:`s` start at the initial params, and after every k-th (``sync_period``) step::

    s <- s + slow_step_size * (p - s)
    p <- s                       (the update returned is s - p_before)

Paper: Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back",
NeurIPS 2019. Reference: Algorithm 1 / michaelrzhang/lookahead's slow update; the official
code synchronises at the first step and every k after, Algorithm 1 after steps k, 2k, ...:
we follow Algorithm 1, as ``torch_opt.Lookahead`` does.
Differs from ``optax.lookahead`` in where the slow weights live: optax makes the params a
``LookaheadParams(fast, slow)`` pair; here they are in the optimizer state
(:class:`LookaheadState`), so params stay plain params and any training loop works unchanged.
``update`` therefore needs ``params``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from twinopt.hparams import check_int, check_range

from ._common import init_count, tree_map


class LookaheadState(NamedTuple):
    inner_state: optax.OptState
    slow: optax.Params
    count: jnp.ndarray


def lookahead(inner: optax.GradientTransformation, sync_period: int = 5,
              slow_step_size: float = 0.5) -> optax.GradientTransformationExtraArgs:
    """Wrap ``inner``: every ``sync_period`` steps the params move to the updated slow weights.

    Args:
      inner: the transformation of the fast weights (any optax transformation; extra arguments
        given to ``update``, such as ``value=loss``, are passed on to it).
      sync_period: k, the inner steps between synchronisations, an integer >= 1.
      slow_step_size: alpha, the fraction of the way the slow weights move, in (0, 1].

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`LookaheadState`;
      ``update`` needs ``params``. Under ``optax.inject_hyperparams`` both settings may be arrays.
    """
    check_int("sync_period", sync_period)
    check_range("slow_step_size", slow_step_size, 0.0, 1.0, low_open=True)

    # Extra arguments (value=loss, ...) reach the inner transformation; one that takes none ignores them.
    inner = optax.with_extra_args_support(inner)

    def init(params):
        return LookaheadState(inner.init(params), tree_map(jnp.array, params), init_count())

    def update(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("lookahead needs the params: call update(grads, state, params).")
        inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        fast = optax.apply_updates(params, inner_updates)
        count = optax.safe_increment(state.count)
        sync = count % sync_period == 0
        slow = tree_map(lambda s, f: jnp.where(sync, s + slow_step_size * (f - s), s), state.slow, fast)
        # Off-sync steps pass the inner updates through untouched, so they add no rounding.
        updates = tree_map(lambda s, u, p: jnp.where(sync, s - p, u), slow, inner_updates, params)
        return updates, LookaheadState(inner_state, slow, count)

    return optax.GradientTransformationExtraArgs(init, update)
