r"""Adam and AMSGrad (Kingma & Ba, 2015; Reddi et al., 2018), the arithmetic of torch.optim.Adam.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    g   <- g + weight_decay * p                   (L2 penalty, only if weight_decay != 0)
    m   <- m + (1 - b1) * (g - m)                  (lerp, as torch.optim)
    v   <- b2 * v + (1 - b2) * g * g
    vm  <- max(vm, v)                              (AMSGrad only: max of the *raw* v)
    d   <- sqrt(v or vm) / sqrt(1 - b2^t) + eps
    p   <- p - lr / (1 - b1^t) * m / d

Papers: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad).
Reference: ``torch.optim.Adam`` (reproduced to 1e-12 relative in float64, see parity_tests).
Differs from ``optax.amsgrad``, which keeps the max of the bias-corrected
:math:`v / (1 - b2^t)`: the two coincide only for ``b2 = 0``. Same arithmetic as
``jax_opt.adam``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_betas, check_nonneg

from ._base import Optimizer, blocks, fused_groups, new_step


class Adam(Optimizer):
    """Adam; ``amsgrad=True`` gives AMSGrad. Decay is L2 (added to the gradient), or with
    ``decoupled_weight_decay=True`` (as torch.optim.Adam takes it) AdamW's."""

    _decoupled = False  # the class's decay, for state dicts without the group's flag

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, fused=None, capturable=False,
                 differentiable=False, decoupled_weight_decay=False):
        check_nonneg("lr", lr)
        check_betas("betas", betas, length=2)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        fused=fused, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:  # state dicts saved before the flag was a group's
            group.setdefault("decoupled_weight_decay", self._decoupled)

    def _init_state(self, p, group):
        state = {"step": new_step(p.device if group["fused"] else None), "exp_avg": torch.zeros_like(p),
                 "exp_avg_sq": torch.zeros_like(p)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p)
        return state

    def _update(self, group, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        adam(
            params, grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else None,
            [s["step"] for s in states],
            foreach=foreach, fused=group["fused"], lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
            weight_decay=group["weight_decay"], decoupled_weight_decay=group["decoupled_weight_decay"],
        )


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, foreach, lr, beta1,
         beta2, eps, weight_decay, decoupled_weight_decay, fused=False):
    """Functional Adam/AMSGrad/AdamW step; ``max_exp_avg_sqs`` is None unless AMSGrad."""
    fn = _fused_adam if fused else _multi_tensor_adam if foreach else _single_tensor_adam
    fn(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr=lr, beta1=beta1,
       beta2=beta2, eps=eps, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)


def decay_and_update_moments(param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, weight_decay,
                             decoupled_weight_decay):
    """The start of every Adam-family step, as torch.optim does it: weight decay (decoupled: the
    param shrinks in place; L2: added to a new gradient tensor, p.grad is left alone), then the
    two moments. Returns the gradient the moments saw."""
    if weight_decay != 0:
        if decoupled_weight_decay:
            param.mul_(1 - lr * weight_decay)
        else:
            grad = grad.add(param, alpha=weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    return grad


def foreach_decay_and_update_moments(params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, weight_decay,
                                     decoupled_weight_decay):
    """:func:`decay_and_update_moments` on lists of tensors with ``torch._foreach_*`` ops."""
    if weight_decay != 0:
        if decoupled_weight_decay:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    return grads


def _single_tensor_adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr,
                        beta1, beta2, eps, weight_decay, decoupled_weight_decay):
    for i, (param, grad, exp_avg, exp_avg_sq, step_t) in enumerate(
            zip(params, grads, exp_avgs, exp_avg_sqs, steps)):
        step_t += 1
        step = step_t.item()
        max_exp_avg_sq = max_exp_avg_sqs[i] if max_exp_avg_sqs is not None else None
        for p, g, m, v, vm in blocks(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq):
            decay_and_update_moments(p, g, m, v, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
                                     decoupled_weight_decay=decoupled_weight_decay)
            if vm is not None:
                v = torch.maximum(vm, v, out=vm)
            denom = (v.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - beta1**step))


def _multi_tensor_adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr,
                       beta1, beta2, eps, weight_decay, decoupled_weight_decay):
    torch._foreach_add_(steps, 1)
    foreach_decay_and_update_moments(params, grads, exp_avgs, exp_avg_sqs, lr=lr, beta1=beta1, beta2=beta2,
                                     weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)
    if max_exp_avg_sqs is not None:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        exp_avg_sqs = max_exp_avg_sqs
    step_values = [s.item() for s in steps]
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, [(1 - beta2**t) ** 0.5 for t in step_values])
    torch._foreach_add_(denoms, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denoms, [-lr / (1 - beta1**t) for t in step_values])


def _fused_adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr, beta1, beta2, eps,
                weight_decay, decoupled_weight_decay):
    # torch's kernels compute this module's arithmetic in one pass (equal to the foreach path
    # bit for bit in float64, see parity_tests).
    kernel = torch._fused_adamw_ if decoupled_weight_decay else torch._fused_adam_
    torch._foreach_add_(steps, 1)
    for p, g, m, v, vm, s in fused_groups(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps):
        kernel(p, g, m, v, vm, s, amsgrad=bool(vm), lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
               eps=eps, maximize=False)
