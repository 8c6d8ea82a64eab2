r"""Adan, ADAptive Nesterov momentum (Xie et al., 2022), the arithmetic of the official sail-sg/Adan code.

For each parameter :math:`p` with gradient :math:`g` (clipped, see ``max_grad_norm``), at step
:math:`t = 1, 2, \dots`, with :math:`g_{t-1}` the previous step's (clipped) gradient::

    diff <- g - g_{t-1}                            (0 at the first step)
    m    <- b1 * m + (1 - b1) * g
    d    <- b2 * d + (1 - b2) * diff
    n    <- b3 * n + (1 - b3) * (g + b2 * diff)^2
    den  <- sqrt(n) / sqrt(1 - b3^t) + eps
    no_prox=True:  p <- p * (1 - lr * wd) - lr / (1 - b1^t) * m / den - lr * b2 / (1 - b2^t) * d / den
    no_prox=False: p <- (p - lr / (1 - b1^t) * m / den - lr * b2 / (1 - b2^t) * d / den) / (1 + lr * wd)

``max_grad_norm > 0`` first multiplies the gradients by ``min(max_grad_norm / (|G| + eps), 1)``,
with :math:`|G|` the 2-norm of the gradients of every param group together and ``eps`` the last
group's, as the official code.

Paper: Xie, Zhou, Li, Lin & Yan, "Adan: Adaptive Nesterov Momentum Algorithm for Faster
Optimizing Deep Models", IEEE TPAMI 2024 (arXiv:2208.06677), Algorithm 1; its betas are the
weights of the new terms, ``1 - `` the code's (and ours).
Reference: sail-sg/Adan ``adan.py`` (commit f0b1b81, unchanged at the repository's 2c65bea),
transcribed in ``parity_tests/reference.py``. Differences from the official code:

- Each param counts its own steps (``state["step"]``, as torch.optim does); the official code
  keeps one count per param group (``group["step"]``), which a param that gets its first gradient
  late joins at the group's count. Equal when every param has a gradient at every step.
- The gradients are scaled into new tensors (the official code scales ``p.grad`` in place), and
  ``maximize`` is taken. No fused path: torch has no Adan kernel (the official one is a CUDA
  extension of its own); the default is torch.optim's (``foreach`` on CUDA), not the official
  ``foreach=True``.
- ``max_grad_norm`` is per param group, like every other hyperparameter: the official code takes
  the constructor's for all groups (and ignores a group's own); given to the constructor, the two
  are the same.

``pytorch_optimizer.Adan`` computes these steps (its ``weight_decouple`` is our ``no_prox``).
``optax.adan`` weights the gradient difference by ``1 - b2`` where the official code weights it by
``b2`` (in ``n`` and in the step), and adds ``eps_root=1e-8`` to ``n`` inside the root: it computes
our updates with ``b2=0.5`` on both sides and its ``eps_root=0``. Its weight decay is ours with
``no_prox=True``. Same arithmetic as ``jax_opt.adan``.
"""

from __future__ import annotations

import math

import torch

from twinopt.hparams import check_betas, check_nonneg

from ._base import Optimizer, blocks, copy_each, new_step


class Adan(Optimizer):
    """Adan: Nesterov momentum estimated from gradient differences, with decoupled weight decay.

    Args:
      params: the parameters, or param groups (dicts) with their own hyperparameters.
      lr: the learning rate, >= 0 (the official README: often 5-10x AdamW's).
      betas: ``(b1, b2, b3)``, each in [0, 1): the decays of the gradients' mean, of their
        differences' mean, and of the squared Nesterov term.
      eps: added to the denominator, >= 0.
      weight_decay: >= 0; the step is divided by ``1 + lr * weight_decay`` (``no_prox=True``: the
        param first multiplied by ``1 - lr * weight_decay``, as AdamW).
      max_grad_norm: >= 0; > 0: scale the group's gradients by ``max_grad_norm / (|G| + eps)`` where
        the 2-norm ``|G|`` of all groups' gradients together exceeds it; 0 (default): no clipping.
      no_prox: decay as AdamW instead of the proximal division.
      foreach: the multi-tensor path (default: on CUDA).
      maximize: ascend instead of descend.

    Example:
      >>> opt = torch_opt.Adan(model.parameters(), lr=5e-3, weight_decay=0.02)  # doctest: +SKIP
    """

    def __init__(self, params, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, max_grad_norm=0.0,
                 no_prox=False, *, foreach=None, maximize=False):
        check_nonneg("lr", lr)
        check_betas("betas", betas, length=3)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        check_nonneg("max_grad_norm", max_grad_norm)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                        no_prox=no_prox)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize)

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._global_grad_norm = self._grad_norm() if any(g["max_grad_norm"] > 0 for g in self.param_groups) else None
        super().step()
        return loss

    def _grad_norm(self):
        """The 2-norm of every group's gradients together, summed as the official code sums it."""
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        total = torch.zeros((), device=grads[0].device if grads else None)
        for g in grads:
            total.add_(g.pow(2).sum())
        return total.sqrt()

    def _clip_factor(self, group) -> float:
        """What the official code multiplies the gradients by: ``min(max_grad_norm / (|G| + eps), 1)``,
        with the eps of the last group (the official code reads ``group["eps"]`` after its loop)."""
        if group["max_grad_norm"] == 0:
            return 1.0
        eps = self.param_groups[-1]["eps"]
        return torch.clamp(group["max_grad_norm"] / (self._global_grad_norm + eps), max=1.0).item()

    def _init_state(self, p, group):
        return {"step": new_step(), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p),
                "exp_avg_diff": torch.zeros_like(p), "neg_pre_grad": torch.zeros_like(p)}

    def _update(self, group, params, grads, states, foreach):
        beta1, beta2, beta3 = group["betas"]
        adan(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
             [s["exp_avg_diff"] for s in states], [s["neg_pre_grad"] for s in states], [s["step"] for s in states],
             foreach=foreach, lr=group["lr"], beta1=beta1, beta2=beta2, beta3=beta3, eps=group["eps"],
             weight_decay=group["weight_decay"], no_prox=group["no_prox"], clip=self._clip_factor(group))


def adan(params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, steps, *, foreach, lr, beta1, beta2,
         beta3, eps, weight_decay, no_prox, clip=1.0):
    """Functional Adan step; ``clip`` multiplies the gradients first (the global-norm clipping)."""
    fn = _multi_tensor_adan if foreach else _single_tensor_adan
    fn(params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, steps, lr=lr, beta1=beta1, beta2=beta2,
       beta3=beta3, eps=eps, weight_decay=weight_decay, no_prox=no_prox, clip=clip)


def _step_sizes(step, *, lr, beta1, beta2, beta3):
    """``(sqrt(1 - b3^t), lr / (1 - b1^t), lr * b2 / (1 - b2^t))`` at step ``step``, as the official code."""
    return math.sqrt(1.0 - beta3**step), lr / (1.0 - beta1**step), lr * beta2 / (1.0 - beta2**step)


def _single_tensor_adan(params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, steps, *, lr, beta1,
                        beta2, beta3, eps, weight_decay, no_prox, clip):
    for param, grad, exp_avg, exp_avg_sq, exp_avg_diff, neg_pre_grad, step_t in zip(
            params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, steps):
        step_t += 1
        step = step_t.item()
        bias_correction3_sqrt, step_size, step_size_diff = _step_sizes(step, lr=lr, beta1=beta1, beta2=beta2,
                                                                       beta3=beta3)
        for p, g, m, n, d, neg_grad_or_diff in blocks(param, grad, exp_avg, exp_avg_sq, exp_avg_diff, neg_pre_grad):
            if clip != 1.0:
                g = g.mul(clip)
            if step == 1:  # no previous gradient: the difference is 0 (the official code: -g + g)
                torch.neg(g, out=neg_grad_or_diff)
            neg_grad_or_diff.add_(g)
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            d.mul_(beta2).add_(neg_grad_or_diff, alpha=1 - beta2)
            neg_grad_or_diff.mul_(beta2).add_(g)
            n.mul_(beta3).addcmul_(neg_grad_or_diff, neg_grad_or_diff, value=1 - beta3)
            denom = n.sqrt().div_(bias_correction3_sqrt).add_(eps)
            if no_prox and weight_decay != 0:
                p.mul_(1 - lr * weight_decay)
            p.addcdiv_(m, denom, value=-step_size)
            p.addcdiv_(d, denom, value=-step_size_diff)
            if not no_prox and weight_decay != 0:
                p.div_(1 + lr * weight_decay)
            torch.neg(g, out=neg_grad_or_diff)


def _multi_tensor_adan(params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, steps, *, lr, beta1,
                       beta2, beta3, eps, weight_decay, no_prox, clip):
    torch._foreach_add_(steps, 1)
    step_values = [s.item() for s in steps]
    bias_corrections3_sqrt, step_sizes, step_sizes_diff = zip(*(
        _step_sizes(t, lr=lr, beta1=beta1, beta2=beta2, beta3=beta3) for t in step_values))
    if clip != 1.0:
        grads = torch._foreach_mul(grads, clip)
    first = [i for i, t in enumerate(step_values) if t == 1]
    if first:  # no previous gradient: the difference is 0
        copy_each([neg_pre_grads[i] for i in first], torch._foreach_neg([grads[i] for i in first]))
    torch._foreach_add_(neg_pre_grads, grads)
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_diffs, beta2)
    torch._foreach_add_(exp_avg_diffs, neg_pre_grads, alpha=1 - beta2)
    torch._foreach_mul_(neg_pre_grads, beta2)
    torch._foreach_add_(neg_pre_grads, grads)
    torch._foreach_mul_(exp_avg_sqs, beta3)
    torch._foreach_addcmul_(exp_avg_sqs, neg_pre_grads, neg_pre_grads, value=1 - beta3)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, list(bias_corrections3_sqrt))
    torch._foreach_add_(denoms, eps)
    if no_prox and weight_decay != 0:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    torch._foreach_addcdiv_(params, exp_avgs, denoms, [-s for s in step_sizes])
    torch._foreach_addcdiv_(params, exp_avg_diffs, denoms, [-s for s in step_sizes_diff])
    if not no_prox and weight_decay != 0:
        torch._foreach_div_(params, 1 + lr * weight_decay)
    copy_each(neg_pre_grads, torch._foreach_neg(grads))
