r"""ASGD, averaged stochastic gradient descent (Polyak & Juditsky, 1992), the arithmetic of torch.optim.ASGD.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`, with the
scalars ``eta = learning_rate`` and ``mu = 1`` and the average ``ax = 0`` at init::

    g   <- g + weight_decay * p                    (L2 penalty, only if weight_decay != 0)
    p   <- p - eta * (g + lambd * p)
    ax  <- p if mu = 1, else ax + mu * (p - ax)
    eta <- lr / (1 + lambd * lr * t) ** alpha      (lr: this step's value; eta serves the next step)
    mu  <- 1 / max(1, t - t0)

The params follow SGD with the decaying rate ``eta`` and a decay ``lambd``; ``ax`` is the mean of
the params of steps ``t0 + 2`` to ``t`` once ``t > t0 + 1`` (until then, the params themselves).
The averaged params, which ASGD evaluates with, are the state's ``ax``: ``state[1].ax`` of
:func:`asgd`.

Papers: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM J.
Control Optim. 30(4), 1992; the rate schedule is Bottou's ("Stochastic Gradient Descent Tricks",
Neural Networks: Tricks of the Trade, 2012).
Reference: ``torch.optim.ASGD`` of torch 2.13.0 (reproduced to 1e-12 relative in float64, see
parity_tests), whose per-tensor path computes ``p * (1 - lambd * eta) - eta * g`` and its foreach
path this module's ``p - eta * (g + lambd * p)``: equal up to rounding. Its ``eta`` and ``mu`` are
per-param scalars, all equal; here they are one scalar per transformation. optax has no ASGD.
Same arithmetic as ``torch_opt.ASGD``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from twinopt.hparams import check_nonneg

from ._common import as_dtype, float_count, init_count, learning_rate_at, tree_map, weight_decay_term, zeros_like


class ScaleByASGDState(NamedTuple):
    count: jnp.ndarray
    eta: jnp.ndarray  # the next step's rate
    mu: jnp.ndarray  # the next step's averaging weight
    ax: optax.Params  # the averaged params


def scale_by_asgd(learning_rate=1e-2, lambd=1e-4, alpha=0.75, t0=1e6) -> optax.GradientTransformation:
    """The ASGD step ``eta * (g + lambd * p)`` (to be subtracted), with ``eta``, ``mu`` and the
    averaged params ``ax`` in the state; needs ``params``."""

    def init(params):
        eta = jnp.asarray(learning_rate_at(learning_rate, 0), dtype=jnp.result_type(float))
        return ScaleByASGDState(init_count(), eta, jnp.ones([], eta.dtype), zeros_like(params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        steps = tree_map(lambda g, p: as_dtype(state.eta, p) * (g + lambd * p), updates, params)

        def average(ax, p, step):
            p = p - step  # the new param: optax.apply_updates' p + (-step), to the bit
            return jnp.where(state.mu == 1, p, ax + (p - ax) * as_dtype(state.mu, ax))

        ax = tree_map(average, state.ax, params, steps)
        count = optax.safe_increment(state.count)
        t, lr = float_count(count), learning_rate_at(learning_rate, state.count)
        eta = jnp.asarray(lr / (1 + lambd * lr * t) ** alpha, state.eta.dtype)
        mu = jnp.asarray(1 / jnp.maximum(1, t - t0), state.mu.dtype)
        return steps, ScaleByASGDState(count, eta, mu, ax)

    return optax.GradientTransformation(init, update)


def asgd(learning_rate: float | optax.Schedule = 1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6,
         weight_decay: float = 0.0) -> optax.GradientTransformation:
    """ASGD, with L2 weight decay added to the gradient; the averaged params are in its state.

    Args:
      learning_rate: a float >= 0 or an optax schedule of the step count.
      lambd: the decay term, >= 0: the params shrink by ``1 - lambd * eta`` a step, and the rate
        decays as ``(1 + lambd * lr * t) ** -alpha``.
      alpha: the power of the rate's decay, >= 0.
      t0: averaging starts at step ``t0 + 2``, >= 0 (the default 1e6: the average is the params).
      weight_decay: L2 penalty added to the gradient, >= 0.

    Returns:
      An ``optax.GradientTransformation`` whose update needs ``params``; its state is
      ``(EmptyState(), ScaleByASGDState(count, eta, mu, ax), EmptyState())``: ``state[1].ax`` are
      the averaged params.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from jax_opt.asgd import asgd
      >>> tx = asgd(learning_rate=0.1, lambd=0.0, t0=0)  # ax: the mean of the params from step 2 on
      >>> params = {"w": jnp.zeros(1)}
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     updates, state = tx.update({"w": jnp.ones(1)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> round(params["w"].item(), 4), round(state[1].ax["w"].item(), 4)  # (p2 + p3) / 2
      (-0.3, -0.25)

    References:
      Polyak & Juditsky, SIAM J. Control Optim. 30(4), 1992, https://doi.org/10.1137/0330046
    """
    check_nonneg("learning_rate", learning_rate)
    check_nonneg("lambd", lambd)
    check_nonneg("alpha", alpha)
    check_nonneg("t0", t0)
    check_nonneg("weight_decay", weight_decay)
    return optax.chain(weight_decay_term(weight_decay), scale_by_asgd(learning_rate, lambd, alpha, t0),
                       optax.scale(-1.0))

