r"""AdaBelief (Zhuang et al., 2020), the arithmetic of the official ``adabelief-pytorch`` 0.2.1.

Adam whose second moment tracks the squared deviation of the gradient from its running mean
(the "belief" in the observed gradient) instead of the squared gradient. For each parameter
:math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    p   <- p * (1 - lr * weight_decay)             (weight_decouple=True, the default)
    p   <- p * (1 - weight_decay)                  (weight_decouple=True, fixed_decay=True)
    g   <- g + weight_decay * p                    (weight_decouple=False: L2 penalty)
    m   <- b1 * m + (1 - b1) * g
    s   <- b2 * s + (1 - b2) * (g - m)^2 + eps     (eps stays in the state, as in the official code)
    sm  <- max(sm, s)                              (amsgrad only)
    rectify=False:
        p <- p - lr / (1 - b1^t) * m / (sqrt(s or sm) / sqrt(1 - b2^t) + eps)
    rectify=True (the default), with rho_inf = 2 / (1 - b2) - 1, rho_t = rho_inf - 2 t b2^t / (1 - b2^t):
        rho_t >= 5: r <- sqrt((1 - b2^t) (rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) rho_t (rho_inf - 2)))
                    p <- p - lr r / (1 - b1^t) * m / (sqrt(s) + eps)
        rho_t < 5:  p <- p - lr / (1 - b1^t) * m   (degenerated_to_sgd=True; else no step)

Paper: Zhuang, Tang, Ding, Tatikonda, Dvornek, Papademetris & Duncan, "AdaBelief Optimizer:
Adapting Stepsizes by the Belief in Observed Gradients", NeurIPS 2020.
Reference: juntang-zhuang/Adabelief-Optimizer, ``pypi_packages/adabelief_pytorch0.2.1/
adabelief_pytorch/AdaBelief.py`` (the PyPI package ``adabelief-pytorch`` 0.2.1, repository commit
2855178e), transcribed in ``parity_tests/reference.py``. Differences from the official code:

- ``amsgrad`` acts on the un-rectified step only: the official rectified step divides by the
  current ``s`` and never reads ``sm`` (kept here as there, so that the two agree).
- ``weight_decouple``, ``fixed_decay``, ``rectify`` and ``degenerated_to_sgd`` are per param group
  (the official code keeps one value for the whole optimizer); ``print_change_log`` is not taken
  (nothing is printed). The official code's per-group cache of the rectified step sizes (``buffer``)
  is left out: it returns the values computed here.
- L2 decay is added to a new gradient tensor (the official code adds it to ``p.grad`` in place);
  float16 params are stepped in float16 (the official code steps a float32 copy).
- Per-tensor and ``_foreach_`` paths and ``maximize`` (the official code has neither).

``pytorch_optimizer.AdaBelief(rectify=True)`` computes these steps; ``torch_optimizer.AdaBelief``
(an earlier official version) does with ``eps=1e-16, weight_decouple=True`` and ours
``rectify=False``; ``optax.adabelief`` does with ours ``rectify=False`` (no weight decay there).
Same arithmetic as ``jax_opt.adabelief``.
"""

from __future__ import annotations

import math

import torch

from twinopt.hparams import check_betas, check_nonneg

from ._base import Optimizer, blocks, new_step


class AdaBelief(Optimizer):
    """AdaBelief: Adam with the gradient's deviation from its mean as the second moment.

    Args:
      params: the parameters, or param groups (dicts) with their own hyperparameters.
      lr: the learning rate, >= 0.
      betas: ``(b1, b2)``, each in [0, 1): the decays of the mean and of the squared deviation.
      eps: >= 0, added to the second moment every step and to its root (official default 1e-16;
        the official README recommends 1e-8 where SGD beats Adam, e.g. CNNs on images).
      weight_decay: >= 0; decoupled (``p *= 1 - lr * weight_decay``) unless ``weight_decouple=False``.
      amsgrad: divide by the running max of the second moment (un-rectified step only).
      weight_decouple: decoupled decay as AdamW (default True); False: L2, added to the gradient.
      fixed_decay: with ``weight_decouple``, ``p *= 1 - weight_decay`` (not scaled by lr).
      rectify: RAdam's rectification of the step (default True).
      degenerated_to_sgd: with ``rectify``, the first steps (rho_t < 5) are bias-corrected
        momentum steps (default True); False: no step until rho_t >= 5.
      foreach: the multi-tensor path (default: on CUDA).
      maximize: ascend instead of descend.

    Example:
      >>> opt = torch_opt.AdaBelief(model.parameters(), lr=1e-3, weight_decay=1e-2)  # doctest: +SKIP
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, amsgrad=False,
                 weight_decouple=True, fixed_decay=False, rectify=True, degenerated_to_sgd=True, *,
                 foreach=None, maximize=False):
        check_nonneg("lr", lr)
        check_betas("betas", betas, length=2)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        weight_decouple=weight_decouple, fixed_decay=fixed_decay, rectify=rectify,
                        degenerated_to_sgd=degenerated_to_sgd)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize)

    def _init_state(self, p, group):
        state = {"step": new_step(), "exp_avg": torch.zeros_like(p), "exp_avg_var": torch.zeros_like(p)}
        if group["amsgrad"]:
            state["max_exp_avg_var"] = torch.zeros_like(p)
        return state

    def _update(self, group, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        adabelief(
            params, grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_var"] for s in states],
            [s["max_exp_avg_var"] for s in states] if group["amsgrad"] else None,
            [s["step"] for s in states],
            foreach=foreach, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
            weight_decay=group["weight_decay"], weight_decouple=group["weight_decouple"],
            fixed_decay=group["fixed_decay"], rectify=group["rectify"],
            degenerated_to_sgd=group["degenerated_to_sgd"],
        )


def adabelief(params, grads, exp_avgs, exp_avg_vars, max_exp_avg_vars, steps, *, foreach, lr, beta1, beta2, eps,
              weight_decay, weight_decouple, fixed_decay, rectify, degenerated_to_sgd):
    """Functional AdaBelief step; ``max_exp_avg_vars`` is None unless amsgrad."""
    fn = _multi_tensor_adabelief if foreach else _single_tensor_adabelief
    fn(params, grads, exp_avgs, exp_avg_vars, max_exp_avg_vars, steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
       weight_decay=weight_decay, weight_decouple=weight_decouple, fixed_decay=fixed_decay, rectify=rectify,
       degenerated_to_sgd=degenerated_to_sgd)


def _decay_factor(lr, weight_decay, fixed_decay):
    """What a decoupled decay multiplies the param by (the official code's ``1.0 - lr * weight_decay``)."""
    return 1.0 - (weight_decay if fixed_decay else lr * weight_decay)


def _step_scalars(step, *, lr, beta1, beta2, rectify, degenerated_to_sgd):
    """The official code's step at ``step``, as ``(root_scale, value)``: ``p += value * m / (sqrt(v) /
    root_scale + eps)``, or ``p += value * m`` where ``root_scale`` is None (the SGD step; value 0: none).
    ``root_scale`` is 1 for the rectified step (its ``sqrt(1 - b2^t)`` is in ``value``): dividing by it is exact."""
    bias_correction1 = 1 - beta1**step
    if not rectify:
        return math.sqrt(1 - beta2**step), -(lr / bias_correction1)
    beta2_t = beta2**step
    n_sma_max = 2 / (1 - beta2) - 1
    n_sma = n_sma_max - 2 * step * beta2_t / (1 - beta2_t)
    if n_sma >= 5:
        step_size = math.sqrt((1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max
                              / (n_sma_max - 2)) / bias_correction1
        return 1.0, -step_size * lr
    return None, -(1.0 / bias_correction1) * lr if degenerated_to_sgd else 0.0


def _single_tensor_adabelief(params, grads, exp_avgs, exp_avg_vars, max_exp_avg_vars, steps, *, lr, beta1, beta2,
                             eps, weight_decay, weight_decouple, fixed_decay, rectify, degenerated_to_sgd):
    for i, (param, grad, exp_avg, exp_avg_var, step_t) in enumerate(zip(params, grads, exp_avgs, exp_avg_vars, steps)):
        step_t += 1
        root_scale, value = _step_scalars(step_t.item(), lr=lr, beta1=beta1, beta2=beta2, rectify=rectify,
                                          degenerated_to_sgd=degenerated_to_sgd)
        max_exp_avg_var = max_exp_avg_vars[i] if max_exp_avg_vars is not None else None
        for p, g, m, s, sm in blocks(param, grad, exp_avg, exp_avg_var, max_exp_avg_var):
            if weight_decouple:
                if weight_decay != 0:
                    p.mul_(_decay_factor(lr, weight_decay, fixed_decay))
            elif weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            residual = g - m
            s.mul_(beta2).addcmul_(residual, residual, value=1 - beta2).add_(eps)
            if sm is not None:
                torch.maximum(sm, s, out=sm)
            if root_scale is None:
                if value != 0:
                    p.add_(m, alpha=value)
                continue
            v = sm if sm is not None and not rectify else s
            p.addcdiv_(m, v.sqrt().div_(root_scale).add_(eps), value=value)


def _multi_tensor_adabelief(params, grads, exp_avgs, exp_avg_vars, max_exp_avg_vars, steps, *, lr, beta1, beta2,
                            eps, weight_decay, weight_decouple, fixed_decay, rectify, degenerated_to_sgd):
    torch._foreach_add_(steps, 1)
    if weight_decay != 0:
        if weight_decouple:
            torch._foreach_mul_(params, _decay_factor(lr, weight_decay, fixed_decay))
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    residuals = torch._foreach_sub(grads, exp_avgs)
    torch._foreach_mul_(exp_avg_vars, beta2)
    torch._foreach_addcmul_(exp_avg_vars, residuals, residuals, value=1 - beta2)
    torch._foreach_add_(exp_avg_vars, eps)
    if max_exp_avg_vars is not None:
        torch._foreach_maximum_(max_exp_avg_vars, exp_avg_vars)
    # Params at different steps (one that got its first gradient late) may take different kinds
    # of step: each kind is one multi-tensor call over its params.
    scalars = [_step_scalars(s.item(), lr=lr, beta1=beta1, beta2=beta2, rectify=rectify,
                             degenerated_to_sgd=degenerated_to_sgd) for s in steps]
    second = max_exp_avg_vars if max_exp_avg_vars is not None and not rectify else exp_avg_vars
    adaptive = [i for i, (root_scale, _) in enumerate(scalars) if root_scale is not None]
    if adaptive:
        denoms = torch._foreach_sqrt([second[i] for i in adaptive])
        torch._foreach_div_(denoms, [scalars[i][0] for i in adaptive])
        torch._foreach_add_(denoms, eps)
        torch._foreach_addcdiv_([params[i] for i in adaptive], [exp_avgs[i] for i in adaptive], denoms,
                                [scalars[i][1] for i in adaptive])
    sgd = [i for i, (root_scale, value) in enumerate(scalars) if root_scale is None and value != 0]
    if sgd:
        torch._foreach_add_([params[i] for i in sgd],
                            torch._foreach_mul([exp_avgs[i] for i in sgd], [scalars[i][1] for i in sgd]))
