r"""LAMB, layer-wise adaptive moments (You et al., 2020), the arithmetic of ``optax.lamb``.

For each parameter tensor :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`
(``||.||``: the tensor's 2-norm)::

    m <- (1 - b1) * g + b1 * m
    v <- (1 - b2) * g * g + b2 * v
    u <- (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)      (optax.scale_by_adam, eps_root = 0)
    u <- u + weight_decay * p                                  (decoupled: after the Adam step)
    r <- ||p|| / ||u||                                         (r = 1 if ||p|| = 0 or ||u|| = 0)
    p <- p - lr * (r * u)

Each tensor moves by ``lr * ||p||`` a step (unless a norm is 0): the trust ratio makes the
step's size relative to the weights'.

Paper: You, Li, Reddi, Hseu, Kumar, Bhojanapalli, Song, Demmel, Keutzer & Hsieh, "Large Batch
Optimization for Deep Learning: Training BERT in 76 minutes", ICLR 2020 (Algorithm 2, with the
identity as the scaling function phi). Reference: ``optax.lamb`` of optax 0.2.8
(``optax/_src/alias.py``: the chain ``scale_by_adam``, ``add_decayed_weights``,
``scale_by_trust_ratio``, ``scale_by_learning_rate``), transcribed in ``parity_tests/reference.py``.
optax's ``eps_root`` (for differentiating through the update) is fixed at its default 0, and its
decay ``mask`` is left to param groups (``optax.multi_transform``, one ``lamb`` per group), as
torch's param groups do it. Here the step count of the bias corrections and of a schedule is a
float (``_common.float_count``), optax's an integer: the same values up to an ulp.
torch-optimizer's ``Lamb`` (cybertronai/pytorch-lamb) has no bias correction and clamps
``||p||`` at 10; pytorch_optimizer's ``Lamb`` leaves the second moment uncorrected, divides by
``1 - b1^t`` outside the trust ratio, adds eps to ``||u||`` and clamps ``||p||`` at 10 too
(docs/optimizers/lamb.md: the settings under which each computes these steps).
Same arithmetic as ``torch_opt.LAMB``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

from twinopt.hparams import check_beta, check_nonneg

from ._common import abs_sq, as_dtype, descend, float_count, init_count, tree_map, weight_decay_term, zeros_like
from .lars import scale_by_trust_ratio


class ScaleByLambState(NamedTuple):
    count: jnp.ndarray
    mu: optax.Updates
    nu: optax.Updates


def scale_by_lamb(b1=0.9, b2=0.999, eps=1e-6) -> optax.GradientTransformation:
    """LAMB's Adam step ``m_hat / (sqrt(v_hat) + eps)``, optax.scale_by_adam's arithmetic (before
    the decay and the trust ratio)."""

    def init(params):
        return ScaleByLambState(init_count(), zeros_like(params), zeros_like(params))

    def update(updates, state, params=None):
        del params
        mu = tree_map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = tree_map(lambda g, v: (1 - b2) * abs_sq(g) + b2 * v, updates, state.nu)
        count = optax.safe_increment(state.count)
        t = float_count(count)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        updates = tree_map(lambda m, v: (m / as_dtype(bc1, m)) / (jnp.sqrt(v / as_dtype(bc2, v)) + eps), mu, nu)
        return updates, ScaleByLambState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def lamb(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0) -> optax.GradientTransformation:
    """LAMB: the Adam step plus decoupled decay, scaled per tensor by its trust ratio.

    Args:
      learning_rate: a float >= 0 or an optax schedule of the step count.
      b1: the first moment's decay, in [0, 1) (default 0.9).
      b2: the second moment's decay, in [0, 1) (default 0.999).
      eps: added to the root of the bias-corrected second moment, >= 0 (default 1e-6).
      weight_decay: decoupled decay, added to the Adam step before the trust ratio, >= 0 (default 0).

    Returns:
      An ``optax.GradientTransformation``; its state is ``(ScaleByLambState(count, mu, nu), ...)``.

    Example:
      >>> import jax.numpy as jnp, optax, jax_opt
      >>> tx = jax_opt.lamb(learning_rate=0.1)
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> updates, state = tx.update({"w": jnp.array([1.0, 0.0])}, tx.init(params), params)
      >>> optax.apply_updates(params, updates)["w"].tolist()  # each tensor moves by lr ||w|| = 0.5
      [2.5, 4.0]

    References:
      You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes", ICLR 2020.
    """
    check_nonneg("learning_rate", learning_rate)
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_nonneg("eps", eps)
    check_nonneg("weight_decay", weight_decay)
    return optax.chain(scale_by_lamb(b1, b2, eps), weight_decay_term(weight_decay), scale_by_trust_ratio(),
                       descend(learning_rate))
