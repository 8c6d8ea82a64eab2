r"""Aggregated Momentum, AggMo (Lucas et al., 2019), the arithmetic of the official AtheMathmo/AggMo code.

K heavy-ball velocities with damping factors :math:`\beta_1, \dots, \beta_K`, averaged. For
each parameter :math:`p` with gradient :math:`g`::

    g   <- g + weight_decay * p                   (L2 penalty, only if weight_decay != 0)
    v_i <- beta_i * v_i + g                        (i = 1..K)
    p   <- p - lr * (sum_i v_i) / K

The K velocities of a parameter are one stacked buffer of shape ``(K, *p.shape)``, state key
``momentum_buffer``. Param groups may have betas of different lengths.

Paper: Lucas, Sun, Zemel & Grosse, "Aggregated Momentum: Stability Through Passive Damping",
ICLR 2019. Reference: AtheMathmo/AggMo ``src/aggmo.py`` (its root ``aggmo.py`` is the same
update with default betas (0, 0.9, 0.99, 0.999)), reproduced to 1e-12 relative in float64
against the NumPy transcription in ``parity_tests/reference.py``. Neither torch.optim nor
optax has AggMo; with one beta it is heavy-ball momentum, ``torch.optim.SGD(momentum=beta)``
or ``optax.sgd(momentum=beta)`` (no dampening, no Nesterov). Differences from the official code:

- It adds the weight decay into ``p.grad`` in place (so the gradient a caller reads after
  ``step()`` has changed, and a second ``step()`` on the same gradient decays twice); here
  the gradient is left as it was.
- It subtracts ``lr / K * v_i`` from ``p`` once per velocity; here the velocities are summed
  first, which differs only by rounding (within 1e-12 relative in float64).
- Its ``momentum_buffer`` is a dict from beta to tensor (so a beta listed twice shares one
  velocity, updated twice a step); here one stacked tensor, one velocity per entry of
  ``betas``. ``lr`` has a default (0.1), and ``lr``, ``betas`` (a non-empty tuple of values
  in [0, 1)) and ``weight_decay`` are validated (the official code checks nothing).

Same arithmetic as ``jax_opt.aggmo``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_betas, check_nonneg

from ._base import Optimizer, blocks


class AggMo(Optimizer):
    """AggMo with one velocity per entry of ``betas``; decay is L2 (added to the gradient)."""

    def __init__(self, params, lr=0.1, betas=(0.0, 0.9, 0.99), weight_decay=0, *, foreach=None,
                 maximize=False):
        check_nonneg("lr", lr)
        check_betas("betas", betas)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize)

    def _init_state(self, p, group):
        return {"momentum_buffer": p.new_zeros((len(group["betas"]), *p.shape))}

    def _update(self, group, params, grads, states, foreach):
        aggmo(params, grads, [s["momentum_buffer"] for s in states], foreach=foreach, lr=group["lr"],
              betas=group["betas"], weight_decay=group["weight_decay"])


def aggmo(params, grads, momentum_buffers, *, foreach, lr, betas, weight_decay):
    """Functional AggMo step; ``momentum_buffers[j][i]`` is velocity ``i`` of ``params[j]``."""
    fn = _multi_tensor_aggmo if foreach else _single_tensor_aggmo
    fn(params, grads, momentum_buffers, lr=lr, betas=betas, weight_decay=weight_decay)


def _single_tensor_aggmo(params, grads, momentum_buffers, *, lr, betas, weight_decay):
    for param, grad, buf in zip(params, grads, momentum_buffers):
        # The velocities as K tensors shaped like the param (views into the stacked buffer).
        for p, g, *velocities in blocks(param, grad, *buf.unbind(0)):
            if weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            for v, beta in zip(velocities, betas):
                torch.add(g, v, alpha=beta, out=v)  # beta * v + g in one pass
            direction = velocities[0] if len(velocities) == 1 else velocities[0] + velocities[1]
            for v in velocities[2:]:
                direction.add_(v)
            p.add_(direction, alpha=-lr / len(betas))


def _multi_tensor_aggmo(params, grads, momentum_buffers, *, lr, betas, weight_decay):
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    for i, beta in enumerate(betas):
        velocities = [buf[i] for buf in momentum_buffers]
        torch._foreach_mul_(velocities, beta)
        torch._foreach_add_(velocities, grads)
    directions = [buf.sum(0) for buf in momentum_buffers]
    torch._foreach_div_(directions, len(betas))
    torch._foreach_add_(params, directions, alpha=-lr)
