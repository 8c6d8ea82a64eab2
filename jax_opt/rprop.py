r"""Rprop, resilient backpropagation (Riedmiller & Braun, 1993), the arithmetic of torch.optim.Rprop.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    s    <- learning_rate                          (each element's step size, at init)
    g    <- g + weight_decay * p                   (L2 penalty, only if weight_decay != 0)
    f    <- etaplus  where g * prev > 0,  etaminus where g * prev < 0,  1 elsewhere
    s    <- clip(s * f, step_size_min, step_size_max)
    g    <- 0 where g * prev < 0                   (after a sign change: no move, and no change next step)
    p    <- p - s * sign(g)
    prev <- g

Only the gradient's sign is used; ``learning_rate`` is the initial step size only: a schedule's
value at step 0 (torch.optim.Rprop reads the group's lr once, at the first step, so a scheduler
changes nothing after that either).

Paper: Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning: The RPROP
Algorithm", IEEE ICNN 1993; the variant is iRprop- (Igel & Hüsken, "Improving the Rprop
Learning Algorithm", 2000): no weight backtracking; after a sign change, no move and g forgotten.
Reference: ``torch.optim.Rprop`` of torch 2.13.0 (reproduced bit for bit, see parity_tests),
which has no weight decay: ``weight_decay`` here is L2 added to the gradient, as in torch.optim's
other optimizers; with the default 0 this is torch.optim.Rprop.
``optax.rprop`` (0.2.8) differs: its update at step t is ours of step t - 1 (the first is zero;
zeroed too where the gradient's sign flips at t), a one-step lag reported as optax pull request
#1725; it clips a step size only where ``g * prev != 0`` (an initial one outside the bounds stays
until then) and takes no weight decay. No setting reproduces it. Same arithmetic as
``torch_opt.Rprop``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import tree_utils as otu

from twinopt.hparams import check_etas, check_nonneg, check_step_sizes

from ._common import init_count, learning_rate_at, tree_map, weight_decay_term, zeros_like


class ScaleByRpropState(NamedTuple):
    count: jnp.ndarray
    prev: optax.Updates  # the last gradient, zero where its sign flipped
    step_size: optax.Updates


def scale_by_rprop(learning_rate=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0)) -> optax.GradientTransformation:
    """The Rprop step ``s * sign(g)`` with the step sizes ``s`` in the state (to be subtracted)."""
    etaminus, etaplus = etas
    step_size_min, step_size_max = step_sizes

    def factor(sign):
        """torch.optim's factor of each step size; a NaN stays NaN."""
        return jnp.where(sign > 0, etaplus, jnp.where(sign < 0, etaminus, jnp.where(sign == 0, 1, sign)))

    def init(params):
        if any(jnp.iscomplexobj(x) for x in jax.tree_util.tree_leaves(params)):
            raise ValueError("rprop compares the signs of successive gradients, which complex numbers do not "
                             "have; step complex params as torch.optim.Rprop does, by their real and imaginary "
                             "parts: jax_opt.real_view(jax_opt.rprop(...)).")
        return ScaleByRpropState(init_count(), zeros_like(params),
                                 otu.tree_full_like(params, learning_rate_at(learning_rate, 0)))

    def update(updates, state, params=None):
        del params
        signs = tree_map(lambda g, prev: jnp.sign(g * prev), updates, state.prev)
        step_size = tree_map(lambda s, sign: jnp.clip(s * factor(sign), step_size_min, step_size_max),
                             state.step_size, signs)
        prev = tree_map(lambda g, sign: jnp.where(sign < 0, 0, g), updates, signs)
        steps = tree_map(lambda s, g: s * jnp.sign(g), step_size, prev)
        return steps, ScaleByRpropState(optax.safe_increment(state.count), prev, step_size)

    return optax.GradientTransformation(init, update)


def rprop(learning_rate: float | optax.Schedule = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
          step_sizes: tuple[float, float] = (1e-6, 50.0), weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Rprop, with L2 weight decay added to the gradient.

    Args:
      learning_rate: the initial step size of every element, >= 0 (a float, or an optax schedule
        whose value at step 0 is taken).
      etas: ``(etaminus, etaplus)``, 0 < etaminus < 1 < etaplus: the factors that shrink a step size
        after a sign change and grow it while the sign stays.
      step_sizes: ``(min, max)``, 0 <= min <= max: the bounds of every step size.
      weight_decay: L2 penalty added to the gradient, >= 0 (torch.optim.Rprop has none: 0).

    Returns:
      An ``optax.GradientTransformation``; its state is
      ``(EmptyState(), ScaleByRpropState(count, prev, step_size), EmptyState())``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from jax_opt.rprop import rprop
      >>> tx = rprop(learning_rate=0.1)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> for g in ([1.0, 1.0], [1.0, -1.0], [1.0, 1.0]):
      ...     updates, state = tx.update({"w": jnp.array(g)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> [round(x, 4) for x in params["w"].tolist()]  # -(0.1 + 0.12 + 0.144), -(0.1 + 0 + 0.05)
      [-0.364, -0.15]

    References:
      Riedmiller & Braun, IEEE ICNN 1993, https://doi.org/10.1109/ICNN.1993.298623
    """
    check_nonneg("learning_rate", learning_rate)
    check_etas("etas", etas)
    check_step_sizes("step_sizes", step_sizes)
    check_nonneg("weight_decay", weight_decay)
    return optax.chain(weight_decay_term(weight_decay), scale_by_rprop(learning_rate, etas, step_sizes),
                       optax.scale(-1.0))
