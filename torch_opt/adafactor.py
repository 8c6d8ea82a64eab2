r"""Adafactor (Shazeer & Stern, 2018), the arithmetic of torch.optim.Adafactor.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    rho_t   = min(lr, 1 / sqrt(t))                  (relative_step=False: lr)
    alpha_t = max(eps2, RMS(p)) * rho_t             (scale_parameter=False: rho_t; RMS of p before the step)
    w_t     = t ** beta2_decay
    p      <- p * (1 - lr * weight_decay)
    p of 2+ dims (last two dims of sizes n, m, both >= min_dim_size_to_factor):
        row_var <- row_var.lerp(mean over the last dim of g * g, w_t)       (shape (..., n, 1))
        col_var <- col_var.lerp(mean over dim -2 of g * g, w_t)             (shape (..., 1, m))
        V        = row_var @ col_var / max(row_var.mean(dim=-2), eps1)
    other params:
        variance <- variance.lerp(g * g, w_t);  V = variance
    U   = g * rsqrt(max(V, eps1^2))
    p  <- p - alpha_t / max(1, RMS(U) / d) * U

``eps1=None`` is the param's machine epsilon; ``add_eps1=True`` adds eps1 to ``g * g`` in both
averages and clamps nothing (the paper, optax, pytorch_optimizer).

Paper: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018.
Reference: ``torch.optim.Adafactor`` (torch 2.13, ``torch/optim/_adafactor.py``: its per-tensor and
foreach paths operation by operation; torch.optim has no fused Adafactor). As there, ``foreach=None``
is the per-tensor path on every device (Adafactor is used where memory is short; the foreach path
keeps a param-sized intermediate per tensor). The options torch.optim lacks (relative_step,
scale_parameter, add_eps1, min_dim_size_to_factor) reach optax's and pytorch_optimizer's variants;
how they differ: ``jax_opt.adafactor``'s docstring and docs/optimizers/adafactor.md. Same arithmetic
as ``jax_opt.adafactor``.
"""

from __future__ import annotations

import math

import torch

from twinopt.hparams import check_eps_pair, check_int, check_nonneg, check_range

from ._base import Optimizer, new_step

# The options torch.optim.Adafactor does not have, at the values that are its arithmetic: a state
# dict of torch.optim.Adafactor loads with them.
_TORCH_OPTIM = {"relative_step": True, "scale_parameter": True, "add_eps1": False, "min_dim_size_to_factor": 0}


class Adafactor(Optimizer):
    """Adafactor: factored second moments, relative step size, update clipping.

    Args:
      params: the parameters, or param groups (dicts) with their own hyperparameters.
      lr: >= 0: the cap of the relative step ``min(lr, 1/sqrt(t))`` (``relative_step=False``: the
        step size) and the scale of the decoupled weight decay (default 1e-2).
      beta2_decay: <= 0; the second moments average with weight ``t ** beta2_decay``.
      eps: ``(eps1, eps2)``: eps1 >= 0 or None (the param's machine epsilon) clamps the estimates
        (``add_eps1``: is added to ``g * g``); eps2 >= 0 bounds RMS(p) in the step size from below.
      d: the update clipping threshold, >= 1.
      weight_decay: decoupled decay ``p * (1 - lr * weight_decay)``, >= 0.
      relative_step: step size ``min(lr, 1/sqrt(t))`` (True, torch.optim) or ``lr`` (optax).
      scale_parameter: multiply the step size by ``max(eps2, RMS(p))`` (True, torch.optim).
      add_eps1: add eps1 to ``g * g`` instead of clamping with it (False, torch.optim).
      min_dim_size_to_factor: an integer >= 0: factor a param of 2+ dims only where its last two
        dims are both at least this long (0, torch.optim: always; optax: 128).
      foreach: the multi-tensor path (default: the per-tensor one, as torch.optim.Adafactor).
      maximize: ascend instead of descend.

    Example:
      >>> opt = torch_opt.Adafactor(model.parameters(), lr=1e-2)  # doctest: +SKIP

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018.
    """

    # Its factored second moment averages over the last two axes, which a real view of a complex
    # param would end in its (real, imaginary) pair: torch.optim.Adafactor refuses them too.
    supports_complex = False

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, *,
                 relative_step=True, scale_parameter=True, add_eps1=False, min_dim_size_to_factor=0,
                 foreach=None, maximize=False):
        check_nonneg("lr", lr)
        check_range("beta2_decay", beta2_decay, -math.inf, 0.0)
        check_eps_pair("eps", eps)
        check_range("d", d, 1.0)
        check_nonneg("weight_decay", weight_decay)
        check_int("min_dim_size_to_factor", min_dim_size_to_factor, low=0)
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=tuple(eps), d=d, weight_decay=weight_decay,
                        relative_step=relative_step, scale_parameter=scale_parameter, add_eps1=add_eps1,
                        min_dim_size_to_factor=min_dim_size_to_factor)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            for name, value in _TORCH_OPTIM.items():
                group.setdefault(name, value)

    def _init_state(self, p, group):
        state = {"step": new_step()}
        if p.dim() > 1 and min(p.shape[-2:]) >= group["min_dim_size_to_factor"]:
            state["row_var"] = p.new_zeros((*p.shape[:-1], 1))
            state["col_var"] = p.new_zeros((*p.shape[:-2], 1, p.shape[-1]))
        else:
            state["variance"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _update(self, group, params, grads, states, foreach):
        eps1, eps2 = group["eps"]
        fn = _multi_tensor_adafactor if group["foreach"] else _single_tensor_adafactor
        fn(params, grads, [s.get("row_var") for s in states], [s.get("col_var") for s in states],
           [s.get("variance") for s in states], [s["step"] for s in states], lr=group["lr"],
           beta2_decay=group["beta2_decay"], eps1=eps1, eps2=eps2, d=group["d"], weight_decay=group["weight_decay"],
           relative_step=group["relative_step"], scale_parameter=group["scale_parameter"],
           add_eps1=group["add_eps1"])


def _norm(tensor) -> float:
    """The 2-norm as a Python double, as torch.optim takes it; of a DTensor (FSDP2) reduced over its
    shards first (its ``.item()`` reads the local shard's partial norm)."""
    norm = tensor.norm(2)
    return (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item()


def _step_size(param, step, *, lr, eps2, relative_step, scale_parameter):
    """alpha_t in Python doubles, as torch.optim computes it (RMS(p) before the decay)."""
    rho = min(lr, 1 / (step**0.5)) if relative_step else lr
    return max(eps2, _norm(param) / (param.numel() ** 0.5)) * rho if scale_parameter else rho


def _mean_square(grad, dim, eps1):
    """The mean of ``grad * grad`` over ``dim`` (kept), as torch.optim computes it: without a
    param-sized intermediate; ``+ eps1`` where it is added. The square is out of place: FSDP2's
    sharded norm is a partial result, which an in-place op cannot take."""
    mean = torch.norm(grad, dim=dim, keepdim=True).square().div_(grad.size(dim))
    return mean if eps1 is None else mean.add_(eps1)


def _single_tensor_adafactor(params, grads, row_vars, col_vars, variances, steps, *, lr, beta2_decay, eps1, eps2,
                             d, weight_decay, relative_step, scale_parameter, add_eps1):
    for param, grad, row_var, col_var, variance, step_t in zip(params, grads, row_vars, col_vars, variances, steps):
        e1 = torch.finfo(param.dtype).eps if eps1 is None else eps1
        step_t += 1
        step = step_t.item()
        weight = step**beta2_decay
        alpha = _step_size(param, step, lr=lr, eps2=eps2, relative_step=relative_step,
                           scale_parameter=scale_parameter)
        if weight_decay != 0:
            param.mul_(1 - lr * weight_decay)
        added = e1 if add_eps1 else None
        if row_var is not None:
            row_var.lerp_(_mean_square(grad, -1, added), weight)
            col_var.lerp_(_mean_square(grad, -2, added), weight)
            estimate = row_var @ col_var
            row_mean = row_var.mean(dim=-2, keepdim=True)
            estimate.div_(row_mean if add_eps1 else row_mean.clamp(min=e1))
        else:
            grad_squared = grad * grad
            variance.lerp_(grad_squared if added is None else grad_squared.add_(added), weight)
            estimate = variance.clone()  # the update must not write into the variance
        if not add_eps1:
            estimate.clamp_(min=e1 * e1)
        update = estimate.rsqrt_().mul_(grad)
        denom = max(1.0, _norm(update) / ((update.numel() ** 0.5) * d))
        param.add_(update, alpha=-alpha / denom)


def _multi_tensor_adafactor(params, grads, row_vars, col_vars, variances, steps, *, lr, beta2_decay, eps1, eps2,
                            d, weight_decay, relative_step, scale_parameter, add_eps1):
    # As torch.optim: one pass per (device, dtype, factored or not) group.
    groups = {}
    for i, (p, r) in enumerate(zip(params, row_vars)):
        groups.setdefault((p.device, p.dtype, r is not None), []).append(i)
    for (_, dtype, factored), idx in groups.items():
        ps, gs, ss = [params[i] for i in idx], [grads[i] for i in idx], [steps[i] for i in idx]
        e1 = torch.finfo(dtype).eps if eps1 is None else eps1
        added = e1 if add_eps1 else None
        torch._foreach_add_(ss, 1.0)
        step_values = [s.item() for s in ss]
        weights = [t**beta2_decay for t in step_values]
        alphas = [_step_size(p, t, lr=lr, eps2=eps2, relative_step=relative_step, scale_parameter=scale_parameter)
                  for p, t in zip(ps, step_values)]
        if weight_decay != 0:
            torch._foreach_mul_(ps, 1 - lr * weight_decay)
        if factored:
            rs, cs = [row_vars[i] for i in idx], [col_vars[i] for i in idx]
            torch._foreach_lerp_(rs, [_mean_square(g, -1, added) for g in gs], weights)
            torch._foreach_lerp_(cs, [_mean_square(g, -2, added) for g in gs], weights)
            estimates = [r @ c for r, c in zip(rs, cs)]
            row_means = [r.mean(dim=-2, keepdim=True) for r in rs]
            if not add_eps1:
                torch._foreach_clamp_min_(row_means, e1)
            torch._foreach_div_(estimates, row_means)
        else:
            vs = [variances[i] for i in idx]
            squares = torch._foreach_mul(gs, gs)
            if add_eps1:
                torch._foreach_add_(squares, added)
            torch._foreach_lerp_(vs, squares, weights)
            estimates = [v.clone() for v in vs]
        if not add_eps1:
            torch._foreach_clamp_min_(estimates, e1 * e1)
        torch._foreach_rsqrt_(estimates)
        torch._foreach_mul_(estimates, gs)
        scales = [-a / max(1.0, _norm(u) / ((u.numel() ** 0.5) * d)) for a, u in zip(alphas, estimates)]
        torch._foreach_mul_(estimates, scales)
        torch._foreach_add_(ps, estimates)
