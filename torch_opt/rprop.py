r"""Rprop, resilient backpropagation (Riedmiller & Braun, 1993), the arithmetic of torch.optim.Rprop.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    s   <- lr                                      (each element's step size, at the first step)
    g   <- g + weight_decay * p                    (L2 penalty, only if weight_decay != 0)
    f   <- etaplus  where g * prev > 0,  etaminus where g * prev < 0,  1 elsewhere
    s   <- clamp(s * f, step_size_min, step_size_max)
    g   <- 0 where g * prev < 0                    (after a sign change: no move, and no change next step)
    p   <- p - s * sign(g)
    prev <- g

Only the gradient's sign is used; ``lr`` is the initial step size only: as torch.optim.Rprop, this
reads a group's lr once, at its first step, so a learning-rate scheduler changes nothing after that.

Paper: Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning: The RPROP
Algorithm", IEEE ICNN 1993; the variant is iRprop- (Igel & Hüsken, "Improving the Rprop
Learning Algorithm", 2000): no weight backtracking; after a sign change, no move and g forgotten.
Reference: ``torch.optim.Rprop`` of torch 2.13.0 (``_single_tensor_rprop`` and
``_multi_tensor_rprop``, reproduced bit for bit, see parity_tests), which has no weight
decay: ``weight_decay`` here is L2 added to the gradient, torch.optim's convention for its other
optimizers, and with the default 0 this is torch.optim.Rprop. ``optax.rprop`` (0.2.8) returns each
step the update of the step before (its first update is zero; optax pull request #1725): no setting
reproduces it. pytorch_optimizer and torch-optimizer have no Rprop. Same arithmetic as
``jax_opt.rprop``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_etas, check_nonneg, check_step_sizes

from ._base import Optimizer, blocks, copy_each, new_step


class Rprop(Optimizer):
    """Rprop: a step size per element, grown where the gradient keeps its sign, shrunk where it flips.

    Args:
      params: the parameters, or param groups (dicts) with their own hyperparameters.
      lr: the initial step size of every element, >= 0 (torch.optim's default 1e-2).
      etas: ``(etaminus, etaplus)``, 0 < etaminus < 1 < etaplus: the factors that shrink a step size
        after a sign change and grow it while the sign stays.
      step_sizes: ``(min, max)``, 0 <= min <= max: the bounds of every step size.
      weight_decay: L2 penalty added to the gradient, >= 0 (torch.optim.Rprop has none: 0).
      foreach: the multi-tensor path (default: on CUDA).
      maximize: ascend instead of descend.

    State per param: ``step``, ``prev`` (the last gradient, zero where its sign flipped) and
    ``step_size``, as torch.optim.Rprop's (whose state dicts load here).

    Example:
      >>> opt = torch_opt.Rprop(model.parameters(), lr=1e-2, etas=(0.5, 1.2))  # doctest: +SKIP

    References:
      Riedmiller & Braun, IEEE ICNN 1993, https://doi.org/10.1109/ICNN.1993.298623
    """

    def __init__(self, params, lr: float = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50),
                 weight_decay: float = 0.0, *, foreach: bool | None = None, maximize: bool = False,
                 capturable=False, differentiable=False):
        check_nonneg("lr", lr)
        check_etas("etas", etas)
        check_step_sizes("step_sizes", step_sizes)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(lr=lr, etas=tuple(etas), step_sizes=tuple(step_sizes), weight_decay=weight_decay)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:  # torch.optim.Rprop's state dicts have no weight_decay
            group.setdefault("weight_decay", 0.0)

    def _init_state(self, p, group):
        return {"step": new_step(), "prev": torch.zeros_like(p), "step_size": torch.full_like(p, group["lr"])}

    def _update(self, group, params, grads, states, foreach):
        etaminus, etaplus = group["etas"]
        step_size_min, step_size_max = group["step_sizes"]
        rprop(params, grads, [s["prev"] for s in states], [s["step_size"] for s in states],
              [s["step"] for s in states], foreach=foreach, etaminus=etaminus, etaplus=etaplus,
              step_size_min=step_size_min, step_size_max=step_size_max, weight_decay=group["weight_decay"])


def rprop(params, grads, prevs, step_sizes, steps, *, foreach, etaminus, etaplus, step_size_min, step_size_max,
          weight_decay):
    """Functional Rprop step."""
    fn = _multi_tensor_rprop if foreach else _single_tensor_rprop
    fn(params, grads, prevs, step_sizes, steps, etaminus=etaminus, etaplus=etaplus, step_size_min=step_size_min,
       step_size_max=step_size_max, weight_decay=weight_decay)


def _factors_(signs, etaminus, etaplus):
    """The signs of ``g * prev`` replaced in place by the step sizes' factors, as torch.optim does it
    (a NaN stays NaN); by masked_fill_, which FSDP2's sharded params take (an indexed assignment
    is an index_put_ that DTensor refuses)."""
    for sign in signs:
        sign.masked_fill_(sign.gt(0), etaplus)
        sign.masked_fill_(sign.lt(0), etaminus)
        sign.masked_fill_(sign.eq(0), 1)


def _single_tensor_rprop(params, grads, prevs, step_sizes, steps, *, etaminus, etaplus, step_size_min,
                         step_size_max, weight_decay):
    for param, grad, prev, step_size, step_t in zip(params, grads, prevs, step_sizes, steps):
        step_t += 1
        for p, g, d, s in blocks(param, grad, prev, step_size):
            if weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            factor = g.mul(d).sign()
            _factors_([factor], etaminus, etaplus)
            s.mul_(factor).clamp_(step_size_min, step_size_max)
            g = g.masked_fill(factor.eq(etaminus), 0)
            p.addcmul_(g.sign(), s, value=-1)
            d.copy_(g)


def _multi_tensor_rprop(params, grads, prevs, step_sizes, steps, *, etaminus, etaplus, step_size_min,
                        step_size_max, weight_decay):
    torch._foreach_add_(steps, 1)
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    factors = torch._foreach_mul(grads, prevs)
    copy_each(prevs, grads)
    torch._foreach_sign_(factors)
    _factors_(factors, etaminus, etaplus)
    torch._foreach_mul_(step_sizes, factors)
    torch._foreach_clamp_min_(step_sizes, step_size_min)
    torch._foreach_clamp_max_(step_sizes, step_size_max)
    for prev, factor in zip(prevs, factors):
        prev.masked_fill_(factor.eq(etaminus), 0)
    torch._foreach_addcmul_(params, torch._foreach_sign(prevs), step_sizes, value=-1)
