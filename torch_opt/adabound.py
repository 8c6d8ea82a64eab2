r"""AdaBound and AMSBound (Luo et al., 2019), the arithmetic of the official Luolc/AdaBound code.

Adam whose per-element step size is clipped into bounds that tighten around a final,
SGD-like learning rate. For each parameter :math:`p` with gradient :math:`g`, at step
:math:`t = 1, 2, \dots`, with ``lr`` the group's current learning rate and ``base_lr`` its
initial one::

    g     <- g + weight_decay * p                 (L2 penalty, only if weight_decay != 0)
    m     <- b1 * m + (1 - b1) * g
    v     <- b2 * v + (1 - b2) * g * g
    vm    <- max(vm, v)                            (AMSBound only: max of the *raw* v)
    d     <- sqrt(v or vm) + eps
    s     <- lr * sqrt(1 - b2^t) / (1 - b1^t)
    f     <- final_lr * lr / base_lr               (a scheduler's decay also moves the bounds)
    lower <- f * (1 - 1 / (gamma * t + 1))
    upper <- f * (1 + 1 / (gamma * t))
    p     <- p - clamp(s / d, lower, upper) * m

Paper: Luo, Xiong, Liu & Sun, "Adaptive Gradient Methods with Dynamic Bound of Learning
Rate", ICLR 2019. Reference: Luolc/AdaBound ``adabound/adabound.py`` (reproduced to 1e-12
relative in float64 against the NumPy transcription in ``parity_tests/reference.py``).
Neither torch.optim nor optax has AdaBound. Differences from the official code:

- The initial learning rate lives in each param group as ``base_lr`` (the official code keeps
  it in ``self.base_lrs``, outside ``state_dict()``, so a resumed run took the *constructor's*
  lr as the initial one). It is saved and restored with the optimizer state; a state dict
  without it (the official code's) keeps this optimizer's ``base_lr``, which is what the
  official code would use, and its integer ``step`` counts are converted to tensors.
- ``lr`` must be > 0 (the official code accepts 0 and then divides by it), ``gamma`` in
  (0, 1) (the official code accepts 0, which divides by zero in the upper bound).
- The official code calls the long-deprecated ``add_(scalar, tensor)`` /
  ``addcmul_(scalar, t1, t2)`` signatures; the arithmetic here is the same with today's
  ``alpha=`` / ``value=`` ones. It also has no multi-tensor path and no ``maximize``.

Same arithmetic as ``jax_opt.adabound``.
"""

from __future__ import annotations

import math

import torch

from twinopt.hparams import as_number, check_betas, check_nonneg, check_range

from ._base import Optimizer, blocks, new_step


def _check_lr(lr):
    """The bounds are scaled by ``lr / base_lr``, so the initial lr cannot be 0."""
    check_range("lr", lr, 0.0, low_open=True)


class AdaBound(Optimizer):
    """AdaBound; ``amsbound=True`` gives AMSBound. Decay is L2 (added to the gradient).

    Each param group holds its initial learning rate as ``base_lr`` (set from its ``lr`` when
    the group is added, unless the group gives one), so an lr scheduler moves the bounds as in
    the official code.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8,
                 weight_decay=0, amsbound=False, *, foreach=None, maximize=False):
        _check_lr(lr)
        check_betas("betas", betas, length=2)
        check_nonneg("final_lr", final_lr)
        check_range("gamma", gamma, 0.0, 1.0, low_open=True, high_open=True)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), final_lr=final_lr, gamma=gamma, eps=eps,
                        weight_decay=weight_decay, amsbound=amsbound)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        # A number: a tensor lr is the scheduler's to change in place, the base stays the initial value.
        group.setdefault("base_lr", as_number("lr", group["lr"]))
        _check_lr(group["base_lr"])

    def load_state_dict(self, state_dict):
        base_lrs = [group["base_lr"] for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, base_lr in zip(self.param_groups, base_lrs):
            group.setdefault("base_lr", base_lr)

    def _init_state(self, p, group):
        state = {"step": new_step(), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        if group["amsbound"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p)
        return state

    def _update(self, group, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        adabound(
            params, grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if group["amsbound"] else None,
            [s["step"] for s in states],
            foreach=foreach, lr=group["lr"], base_lr=group["base_lr"], beta1=beta1, beta2=beta2,
            final_lr=group["final_lr"], gamma=group["gamma"], eps=group["eps"],
            weight_decay=group["weight_decay"],
        )


def adabound(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, foreach, lr, base_lr,
             beta1, beta2, final_lr, gamma, eps, weight_decay):
    """Functional AdaBound/AMSBound step; ``max_exp_avg_sqs`` is None unless AMSBound."""
    fn = _multi_tensor_adabound if foreach else _single_tensor_adabound
    fn(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr=lr, base_lr=base_lr,
       beta1=beta1, beta2=beta2, final_lr=final_lr, gamma=gamma, eps=eps, weight_decay=weight_decay)


def _step_size_and_bounds(step, *, lr, base_lr, beta1, beta2, final_lr, gamma):
    """The unclipped step size and the bounds at step ``step`` (Python floats, as the official code)."""
    step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
    final_lr = final_lr * lr / base_lr
    lower = final_lr * (1 - 1 / (gamma * step + 1))
    upper = final_lr * (1 + 1 / (gamma * step))
    return step_size, lower, upper


def _single_tensor_adabound(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr,
                            base_lr, beta1, beta2, final_lr, gamma, eps, weight_decay):
    for i, (param, grad, exp_avg, exp_avg_sq, step_t) in enumerate(
            zip(params, grads, exp_avgs, exp_avg_sqs, steps)):
        step_t += 1
        step_size, lower, upper = _step_size_and_bounds(
            step_t.item(), lr=lr, base_lr=base_lr, beta1=beta1, beta2=beta2, final_lr=final_lr, gamma=gamma)
        max_exp_avg_sq = max_exp_avg_sqs[i] if max_exp_avg_sqs is not None else None
        step_size_t = torch.tensor(step_size, dtype=param.dtype)  # a 0-d tensor: step_size / denom in one pass
        for p, g, m, v, vm in blocks(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq):
            if weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            if vm is not None:
                v = torch.maximum(vm, v, out=vm)
            update = v.sqrt().add_(eps)
            torch.div(step_size_t, update, out=update).clamp_(lower, upper)
            p.addcmul_(update, m, value=-1)


def _multi_tensor_adabound(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr,
                           base_lr, beta1, beta2, final_lr, gamma, eps, weight_decay):
    torch._foreach_add_(steps, 1)
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    if max_exp_avg_sqs is not None:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        exp_avg_sqs = max_exp_avg_sqs
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denoms, eps)
    step_sizes, lowers, uppers = zip(*(
        _step_size_and_bounds(s.item(), lr=lr, base_lr=base_lr, beta1=beta1, beta2=beta2,
                              final_lr=final_lr, gamma=gamma)
        for s in steps))
    updates = [torch.full_like(d, s) for d, s in zip(denoms, step_sizes)]
    torch._foreach_div_(updates, denoms)
    # clamp(x, lower, upper) = min(max(x, lower), upper), and lower < upper.
    torch._foreach_clamp_min_(updates, list(lowers))
    torch._foreach_clamp_max_(updates, list(uppers))
    torch._foreach_mul_(updates, exp_avgs)
    torch._foreach_sub_(params, updates)
