r"""Aggregated Momentum, AggMo (Lucas et al., 2019), the arithmetic of the official AtheMathmo/AggMo code.

K heavy-ball velocities with damping factors :math:`\beta_1, \dots, \beta_K`, averaged. For
each parameter :math:`p` with gradient :math:`g`::

    g   <- g + weight_decay * p                   (L2 penalty, only if weight_decay != 0)
    v_i <- beta_i * v_i + g                        (i = 1..K)
    p   <- p - lr * (sum_i v_i) / K

The state's ``trace`` is a tuple of K trees shaped like the params: ``trace[i]`` holds velocity
``i`` of every param (flat names ``trace/0/fc1/kernel``, ..., ``trace/<K-1>/fc1/kernel``), and the
velocities are summed in index order. Separate arrays, not one stacked ``(K, *p.shape)`` array
per param as torch_opt.AggMo's ``momentum_buffer``: XLA:CPU updates separate arrays in place with
elementwise fusions, but reads and rewrites a stacked one in several passes, about 10x slower
(ResNet-18's 11.7M float32 params, K = 3, a jitted and donated step: ~45 ms, ~410 ms stacked).
``twinopt.convert`` stacks and splits them between the layouts; ``jax_train.checkpoints.split_stacked``
reads states saved in the stacked layout (train_jax.py checkpoints written before). Different
``aggmo`` instances (e.g. per ``optax.multi_transform`` label) may have betas of different lengths.

Paper: Lucas, Sun, Zemel & Grosse, "Aggregated Momentum: Stability Through Passive Damping",
ICLR 2019. Reference: AtheMathmo/AggMo ``src/aggmo.py`` (its root ``aggmo.py`` is the same
update with default betas (0, 0.9, 0.99, 0.999)), reproduced to 1e-12 relative in float64
against the NumPy transcription in ``parity_tests/reference.py``. Neither torch.optim nor
optax has AggMo; with one beta it is heavy-ball momentum, ``torch.optim.SGD(momentum=beta)``
or ``optax.sgd(momentum=beta)`` (no dampening, no Nesterov). Differences from the official code:

- It adds the weight decay into ``p.grad`` in place; here (as in any optax transformation)
  the incoming gradients are not modified.
- It subtracts ``lr / K * v_i`` from ``p`` once per velocity; here the velocities are summed
  first, which differs only by rounding (within 1e-12 relative in float64).
- Its buffers are a dict keyed by beta (so a beta listed twice shares one velocity, updated
  twice a step); here one velocity per entry of ``betas``. ``learning_rate`` has a default
  (0.1), and ``learning_rate``, ``betas`` (a non-empty tuple of values in [0, 1)) and
  ``weight_decay`` are validated (the official code checks nothing).

Same arithmetic as ``torch_opt.AggMo``.
"""

from __future__ import annotations

from typing import NamedTuple

import optax

from twinopt.hparams import check_betas, check_nonneg

from ._common import as_dtype, tree_map, with_weight_decay, zeros_like


class ScaleByAggMoState(NamedTuple):
    trace: tuple  # K trees shaped like the params: trace[i] is velocity i (damping betas[i])


def scale_by_aggmo(betas=(0.0, 0.9, 0.99)) -> optax.GradientTransformation:
    """The AggMo direction ``(sum_i v_i) / K`` (to be scaled by ``-lr``)."""
    betas = tuple(betas)
    num_betas = len(betas)

    def init(params):
        return ScaleByAggMoState(tuple(zeros_like(params) for _ in betas))  # K buffers, none shared

    def update(updates, state, params=None):
        del params
        if len(state.trace) != num_betas:
            raise ValueError(f"the state holds {len(state.trace)} velocities, betas {betas} need {num_betas}")
        trace = tuple(tree_map(lambda v, g, beta=beta: as_dtype(beta, v) * v + g, velocity, updates)
                      for beta, velocity in zip(betas, state.trace))

        def mean(*velocities):  # summed in index order, as torch's buf.sum(0)
            total = velocities[0]
            for v in velocities[1:]:
                total = total + v
            return total / num_betas

        return tree_map(mean, *trace), ScaleByAggMoState(trace)

    return optax.GradientTransformation(init, update)


def aggmo(learning_rate=0.1, betas=(0.0, 0.9, 0.99), weight_decay=0.0) -> optax.GradientTransformation:
    """AggMo with one velocity per entry of ``betas``; L2 weight decay added to the gradient."""
    check_nonneg("learning_rate", learning_rate)
    check_betas("betas", betas)
    check_nonneg("weight_decay", weight_decay)
    return with_weight_decay(scale_by_aggmo(betas), learning_rate, weight_decay)
