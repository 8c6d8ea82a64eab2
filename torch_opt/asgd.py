r"""ASGD, averaged stochastic gradient descent (Polyak & Juditsky, 1992), the arithmetic of torch.optim.ASGD.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`, with the
scalars ``eta = lr`` and ``mu = 1`` and the average ``ax = 0`` at the first step::

    g   <- g + weight_decay * p                    (L2 penalty, only if weight_decay != 0)
    p   <- p * (1 - lambd * eta) - eta * g         (foreach path: p - eta * (g + lambd * p))
    ax  <- p                      if mu = 1        (foreach path: always the line below)
           ax + mu * (p - ax)     otherwise
    eta <- lr / (1 + lambd * lr * t) ** alpha      (lr: this step's; eta serves the next step)
    mu  <- 1 / max(1, t - t0)

The params follow SGD with the decaying rate ``eta`` and a decay ``lambd``; ``ax`` is the mean of
the params of steps ``t0 + 2`` to ``t`` once ``t > t0 + 1`` (until then, the params themselves).
The averaged params, which ASGD evaluates with, are ``state[p]["ax"]``.

Papers: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM J.
Control Optim. 30(4), 1992; the rate schedule is Bottou's ("Stochastic Gradient Descent Tricks",
Neural Networks: Tricks of the Trade, 2012).
Reference: ``torch.optim.ASGD`` of torch 2.13.0 (``_single_tensor_asgd`` and
``_multi_tensor_asgd``, each reproduced bit for bit, see parity_tests). optax has no ASGD;
pytorch_optimizer's ``ASGD`` is another algorithm (adaptive SGD, Malitsky & Mishchenko 2020).
Same arithmetic as ``jax_opt.asgd``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_nonneg

from ._base import Optimizer, blocks, new_step, scalar_step_dtype


class ASGD(Optimizer):
    """ASGD: SGD with a decaying rate, and the average of its iterates kept in the state (``ax``).

    Args:
      params: the parameters, or param groups (dicts) with their own hyperparameters.
      lr: the learning rate, >= 0.
      lambd: the decay term, >= 0: the params shrink by ``1 - lambd * eta`` a step, and the rate
        decays as ``(1 + lambd * lr * t) ** -alpha``.
      alpha: the power of the rate's decay, >= 0.
      t0: averaging starts at step ``t0 + 2``, >= 0 (the default 1e6: the average is the params).
      weight_decay: L2 penalty added to the gradient, >= 0.
      foreach: the multi-tensor path (default: on CUDA).
      maximize: ascend instead of descend.

    State per param: ``step``, ``eta`` and ``mu`` (scalars: the next step's rate and averaging
    weight) and ``ax`` (the averaged param), as torch.optim.ASGD's (whose state dicts load here).

    Example:
      >>> opt = torch_opt.ASGD(model.parameters(), lr=1e-2, t0=1000)  # doctest: +SKIP
      >>> averaged = [opt.state[p]["ax"] for p in model.parameters()]  # doctest: +SKIP

    References:
      Polyak & Juditsky, SIAM J. Control Optim. 30(4), 1992, https://doi.org/10.1137/0330046
    """

    def __init__(self, params, lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6,
                 weight_decay: float = 0.0, *, foreach: bool | None = None, maximize: bool = False,
                 capturable=False, differentiable=False):
        check_nonneg("lr", lr)
        check_nonneg("lambd", lambd)
        check_nonneg("alpha", alpha)
        check_nonneg("t0", t0)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def _init_state(self, p, group):
        # eta and mu on the param's device, as torch.optim keeps them: the foreach path multiplies by them.
        dtype = scalar_step_dtype()
        return {"step": new_step(), "eta": torch.tensor(group["lr"], dtype=dtype, device=p.device),
                "mu": torch.ones((), dtype=dtype, device=p.device), "ax": torch.zeros_like(p)}

    def _update(self, group, params, grads, states, foreach):
        asgd(params, grads, [s["ax"] for s in states], [s["mu"] for s in states], [s["eta"] for s in states],
             [s["step"] for s in states], foreach=foreach, lr=group["lr"], lambd=group["lambd"],
             alpha=group["alpha"], t0=group["t0"], weight_decay=group["weight_decay"])


def asgd(params, grads, axs, mus, etas, steps, *, foreach, lr, lambd, alpha, t0, weight_decay):
    """Functional ASGD step."""
    fn = _multi_tensor_asgd if foreach else _single_tensor_asgd
    fn(params, grads, axs, mus, etas, steps, lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay)


def _single_tensor_asgd(params, grads, axs, mus, etas, steps, *, lr, lambd, alpha, t0, weight_decay):
    for param, grad, ax, mu, eta, step_t in zip(params, grads, axs, mus, etas, steps):
        step_t += 1
        eta_value, averaging = eta.item(), mu.item() != 1
        for p, g, a in blocks(param, grad, ax):
            if weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            p.mul_(1 - lambd * eta_value)
            p.add_(g, alpha=-eta_value)
            if averaging:
                a.add_(p.sub(a).mul_(mu))
            else:
                a.copy_(p)
        step = step_t.item()
        # Through a tensor of the default dtype, as torch.optim rounds the Python double.
        eta.copy_(torch.as_tensor(lr / ((1 + lambd * lr * step) ** alpha)))
        mu.copy_(torch.as_tensor(1 / max(1, step - t0)))


def _multi_tensor_asgd(params, grads, axs, mus, etas, steps, *, lr, lambd, alpha, t0, weight_decay):
    torch._foreach_add_(steps, 1)
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    directions = torch._foreach_add(grads, params, alpha=lambd)  # g + lambd * p
    torch._foreach_addcmul_(params, directions, etas, value=-1)
    torch._foreach_addcmul_(axs, torch._foreach_sub(params, axs), mus)
    for eta, mu, step in zip(etas, mus, steps):
        # eta from the step tensor (in its dtype), mu from its value, as torch.optim's foreach path.
        eta.copy_(torch.as_tensor(lr / ((1 + lambd * lr * step) ** alpha), device=eta.device))
        mu.copy_(torch.as_tensor(1 / max(1, step.item() - t0), device=mu.device))
