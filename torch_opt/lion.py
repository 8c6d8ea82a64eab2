r"""Lion, EvoLved Sign Momentum (Chen et al., 2023), the arithmetic of the official code.

For each parameter :math:`p` with gradient :math:`g`::

    p <- p * (1 - lr * weight_decay)               (decoupled decay, as the official code)
    c <- b1 * m + (1 - b1) * g
    p <- p - lr * sign(c)
    m <- b2 * m + (1 - b2) * g                     (the momentum, updated after the step)

Paper: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023 (Program 1).
Reference: google/automl ``lion/lion_pytorch.py`` (transcribed in ``parity_tests/reference.py``);
lucidrains' ``lion-pytorch`` and pytorch_optimizer's ``Lion`` compute the same steps. torch.optim
has no Lion. Keeps no step count. Same arithmetic as ``jax_opt.lion``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_betas, check_nonneg

from ._base import Optimizer, blocks


class Lion(Optimizer):
    """Lion: the sign of an interpolation of momentum and gradient; decoupled weight decay.

    Args:
      params: the parameters, or param groups (dicts) with their own hyperparameters.
      lr: the learning rate, >= 0 (every coordinate moves by ``lr`` a step, plus decay).
      betas: ``(b1, b2)``, each in [0, 1): the interpolation whose sign is the step, and the
        momentum's decay.
      weight_decay: decoupled decay, >= 0.
      foreach: the multi-tensor path (default: on CUDA).
      maximize: ascend instead of descend.

    Example:
      >>> opt = torch_opt.Lion(model.parameters(), lr=1e-4, weight_decay=1.0)  # doctest: +SKIP
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, foreach=None, maximize=False):
        check_nonneg("lr", lr)
        check_betas("betas", betas, length=2)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize)

    def _init_state(self, p, group):
        return {"exp_avg": torch.zeros_like(p)}

    def _update(self, group, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        lion(params, grads, [s["exp_avg"] for s in states], foreach=foreach, lr=group["lr"], beta1=beta1,
             beta2=beta2, weight_decay=group["weight_decay"])


def lion(params, grads, exp_avgs, *, foreach, lr, beta1, beta2, weight_decay):
    """Functional Lion step."""
    fn = _multi_tensor_lion if foreach else _single_tensor_lion
    fn(params, grads, exp_avgs, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay)


def _single_tensor_lion(params, grads, exp_avgs, *, lr, beta1, beta2, weight_decay):
    for param, grad, exp_avg in zip(params, grads, exp_avgs):
        for p, g, m in blocks(param, grad, exp_avg):
            if weight_decay != 0:
                p.mul_(1 - lr * weight_decay)
            p.add_(torch.mul(m, beta1).add_(torch.mul(g, 1 - beta1)).sign_(), alpha=-lr)
            m.mul_(beta2).add_(torch.mul(g, 1 - beta2))


def _multi_tensor_lion(params, grads, exp_avgs, *, lr, beta1, beta2, weight_decay):
    if weight_decay != 0:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    # b1 * m + (1 - b1) * g with each product rounded, as jax_opt computes it: the sign of c
    # must not depend on whether an add fuses its multiply.
    directions = torch._foreach_mul(exp_avgs, beta1)
    torch._foreach_add_(directions, torch._foreach_mul(grads, 1 - beta1))
    torch._foreach_sign_(directions)
    torch._foreach_add_(params, directions, alpha=-lr)
    torch._foreach_mul_(exp_avgs, beta2)
    torch._foreach_add_(exp_avgs, torch._foreach_mul(grads, 1 - beta2))
