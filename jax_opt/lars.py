r"""LARS, layer-wise adaptive rate scaling (You et al., 2017), the arithmetic of ``optax.lars``.

For each parameter tensor :math:`p` with gradient :math:`g` (``||.||``: the tensor's 2-norm)::

    u <- g + weight_decay * p                                  (only if weight_decay != 0)
    r <- trust_coefficient * ||p|| / (||u|| + eps)             (r = 1 if ||p|| = 0 or ||u|| = 0)
    u <- lr * (r * u)
    b <- u + momentum * b                                      (b starts at 0)
    p <- p - (u + momentum * b   if nesterov  else  b)

``exclude_vectors=True`` leaves the params with fewer than two dimensions (biases, normalization
scales, scalars) out of the first two lines: they take plain momentum steps ``u = lr * g``, without
weight decay or trust ratio (the convention of MoCo v3 and pytorch_optimizer's ``LARS``).

The learning rate sits *inside* the momentum buffer, as in optax (``scale_by_learning_rate`` comes
before ``trace``): with a constant rate this is torch.optim.SGD's ``p <- p - lr * b``, but under a
schedule each step's rate applies to that step's update only, and the buffer keeps the rates of
the steps it remembers. optax keeps ``-b`` (it traces the negated updates); this buffer holds ``b``,
so that torch_opt's ``momentum_buffer`` is positive: the steps are the same to the last bit.

Paper: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks",
arXiv:1708.03888, 2017. Reference: ``optax.lars`` of optax 0.2.8 (``optax/_src/alias.py``: the
chain ``add_decayed_weights``, ``masked(scale_by_trust_ratio)``, ``scale_by_learning_rate``,
``trace``), transcribed in ``parity_tests/reference.py``. optax's ``weight_decay_mask`` and
``trust_ratio_mask`` (default: every param) are replaced by ``exclude_vectors``; other masks are
param groups (``optax.multi_transform``). The paper's ratio ``||p|| / (||g|| + weight_decay ||p||)``
(pytorch_optimizer's and torch-optimizer's ``LARS``) equals this one only for weight_decay = 0;
torch-optimizer's also scales only params with weight decay. Same arithmetic as ``torch_opt.LARS``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from twinopt.hparams import check_nonneg

from ._common import learning_rate_at, weight_decay_term


def scale_by_trust_ratio(trust_coefficient=1.0, eps=0.0) -> optax.GradientTransformation:
    """``u * trust_coefficient * ||p|| / (||u|| + eps)`` per tensor, ``u`` where a norm is 0
    (``optax.scale_by_trust_ratio`` with ``min_norm=0``, which it is; shared with LAMB)."""
    return optax.scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps)


def _matrices(tree):
    """The mask of ``exclude_vectors``: True for the tensors with two dimensions or more."""
    return jax.tree_util.tree_map(lambda x: jnp.ndim(x) > 1, tree)


def _scale_by_lr(learning_rate) -> optax.GradientTransformation:
    """Multiply by ``+learning_rate`` (a float or a schedule of the step count): the buffer then
    holds positive steps and the chain negates at its end."""
    if callable(learning_rate):
        return optax.scale_by_schedule(lambda count: learning_rate_at(learning_rate, count))
    return optax.scale(learning_rate)


def lars(learning_rate=1e-3, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0, nesterov=False,
         exclude_vectors=False) -> optax.GradientTransformation:
    """LARS: momentum SGD whose update of each tensor is scaled by its trust ratio.

    Args:
      learning_rate: a float >= 0 or an optax schedule of the step count (applied to each step's
        update before the momentum buffer, as optax does).
      momentum: the buffer's decay, >= 0 (default 0.9; 0: no momentum).
      weight_decay: L2 decay added to the gradient before the trust ratio, >= 0 (default 0).
      trust_coefficient: the trust ratio's factor, >= 0 (default 1e-3, the paper's eta).
      eps: added to the update's norm in the ratio's denominator, >= 0 (default 0).
      nesterov: Nesterov momentum ``u + momentum * b`` (default False).
      exclude_vectors: params with fewer than two dimensions take plain momentum steps, without
        weight decay and trust ratio (default False: every param is adapted, as optax).

    Returns:
      An ``optax.GradientTransformation``; its state is a chain whose ``optax.TraceState`` holds
      the momentum buffer ``trace`` (torch_opt's ``momentum_buffer``), preceded by an
      ``optax.ScaleByScheduleState`` (the count) when ``learning_rate`` is a schedule.

    Example:
      >>> import jax.numpy as jnp, optax, jax_opt
      >>> tx = jax_opt.lars(learning_rate=1.0, trust_coefficient=0.1)
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> updates, state = tx.update({"w": jnp.array([1.0, 0.0])}, tx.init(params), params)
      >>> optax.apply_updates(params, updates)["w"].tolist()  # 0.1 * ||w|| = 0.5 along g
      [2.5, 4.0]

    References:
      You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", arXiv:1708.03888, 2017.
    """
    check_nonneg("learning_rate", learning_rate)
    check_nonneg("momentum", momentum)
    check_nonneg("weight_decay", weight_decay)
    check_nonneg("trust_coefficient", trust_coefficient)
    check_nonneg("eps", eps)
    decay, ratio = weight_decay_term(weight_decay), scale_by_trust_ratio(trust_coefficient, eps)
    if exclude_vectors:
        decay, ratio = optax.masked(decay, _matrices), optax.masked(ratio, _matrices)
    return optax.chain(decay, ratio, _scale_by_lr(learning_rate), optax.trace(momentum, nesterov),
                       optax.scale(-1.0))
