r"""NAdam (Dozat, 2016), the arithmetic of torch.optim.NAdam.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`, with the
momentum schedule :math:`\mu_t = b_1 (1 - \tfrac12 \cdot 0.96^{t \psi})`
(:math:`\psi` = ``momentum_decay``) and :math:`\Pi_t = \prod_{i \le t} \mu_i` (``mu_product``)::

    p   <- p * (1 - lr * weight_decay)             (decoupled_weight_decay=True, if weight_decay != 0)
    g   <- g + weight_decay * p                    (decoupled_weight_decay=False, if weight_decay != 0)
    Pi  <- Pi * mu_t
    m   <- m + (1 - b1) * (g - m)                  (lerp, as torch.optim)
    v   <- b2 * v + (1 - b2) * g * g
    d   <- sqrt(v / (1 - b2^t)) + eps              (multi-tensor path: sqrt(v) / sqrt(1 - b2^t) + eps)
    p   <- p - lr * (1 - mu_t) / (1 - Pi) * g / d
    p   <- p - lr * mu_{t+1} / (1 - Pi * mu_{t+1}) * m / d

Papers: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop (the schedule
with 0.96 and psi = 0.004 is his); Loshchilov & Hutter, "Decoupled Weight Decay
Regularization", ICLR 2019 (``decoupled_weight_decay``).
Reference: ``torch.optim.NAdam`` (reproduced to 1e-12 relative in float64, see parity_tests).
As there, ``mu_product`` is a scalar tensor per parameter in the default dtype (float64 only
under a float64 default), and ``load_state_dict`` casts it to the parameter's dtype.
``optax.nadam`` (= ``optax.adam(nesterov=True)``) uses the constant :math:`\mu_t = b_1`, so
:math:`\Pi_t = b_1^t`: its step is ``lr * ((1 - b1) g / (1 - b1^t) + b1 m / (1 - b1^{t+1})) / d``
with ``d = sqrt(v / (1 - b2^t)) + eps`` (``eps_root=0``), i.e. ours in the limit of a large
``momentum_decay``: with ``momentum_decay=1e4`` the term ``0.5 * 0.96^(1e4 t)`` vanishes against
1 and ``jax_opt.nadam`` reproduces ``optax.nadam`` up to rounding (with weight_decay=0; optax
decays only in ``optax.nadamw``, decoupled, as our ``decoupled_weight_decay=True``).
Same arithmetic as ``jax_opt.nadam``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_betas, check_nonneg

from ._base import Optimizer, blocks, new_step, scalar_step_dtype
from .adam import decay_and_update_moments, foreach_decay_and_update_moments


class NAdam(Optimizer):
    """NAdam; ``decoupled_weight_decay=True`` decays as AdamW (NAdamW), else L2."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False):
        check_nonneg("lr", lr)
        check_betas("betas", betas, length=2)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        check_nonneg("momentum_decay", momentum_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def _init_state(self, p, group):
        return {
            "step": new_step(),
            "mu_product": torch.tensor(1.0, dtype=scalar_step_dtype()),
            "exp_avg": torch.zeros_like(p),
            "exp_avg_sq": torch.zeros_like(p),
        }

    def _update(self, group, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        nadam(
            params, grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["mu_product"] for s in states],
            [s["step"] for s in states],
            foreach=foreach, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
            weight_decay=group["weight_decay"], momentum_decay=group["momentum_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )


def nadam(params, grads, exp_avgs, exp_avg_sqs, mu_products, steps, *, foreach, lr, beta1, beta2,
          eps, weight_decay, momentum_decay, decoupled_weight_decay):
    """Functional NAdam step."""
    fn = _multi_tensor_nadam if foreach else _single_tensor_nadam
    fn(params, grads, exp_avgs, exp_avg_sqs, mu_products, steps, lr=lr, beta1=beta1, beta2=beta2,
       eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay,
       decoupled_weight_decay=decoupled_weight_decay)


def _momentum(beta1, step, momentum_decay):
    """Dozat's momentum schedule mu_t, in Python floats as torch.optim computes it."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))


def _step_sizes(lr, mu, mu_next, mu_product):
    """The (negative) multipliers of g / d and m / d, given the already updated mu_product."""
    return -lr * (1.0 - mu) / (1.0 - mu_product), (-lr * mu_next) / (1.0 - mu_product * mu_next)


def _single_tensor_nadam(params, grads, exp_avgs, exp_avg_sqs, mu_products, steps, *, lr, beta1,
                         beta2, eps, weight_decay, momentum_decay, decoupled_weight_decay):
    for param, grad, exp_avg, exp_avg_sq, mu_product, step_t in zip(
            params, grads, exp_avgs, exp_avg_sqs, mu_products, steps):
        step_t += 1
        step = step_t.item()
        mu = _momentum(beta1, step, momentum_decay)
        mu_next = _momentum(beta1, step + 1, momentum_decay)
        mu_product *= mu
        grad_size, exp_avg_size = _step_sizes(lr, mu, mu_next, mu_product.item())
        for p, g, m, v in blocks(param, grad, exp_avg, exp_avg_sq):
            g = decay_and_update_moments(p, g, m, v, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
                                         decoupled_weight_decay=decoupled_weight_decay)
            denom = v.div(1 - beta2**step).sqrt().add_(eps)
            p.addcdiv_(g, denom, value=grad_size)
            p.addcdiv_(m, denom, value=exp_avg_size)


def _multi_tensor_nadam(params, grads, exp_avgs, exp_avg_sqs, mu_products, steps, *, lr, beta1,
                        beta2, eps, weight_decay, momentum_decay, decoupled_weight_decay):
    torch._foreach_add_(steps, 1)
    grads = foreach_decay_and_update_moments(params, grads, exp_avgs, exp_avg_sqs, lr=lr, beta1=beta1, beta2=beta2,
                                             weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    step_values = [s.item() for s in steps]
    mus = [_momentum(beta1, t, momentum_decay) for t in step_values]
    mu_nexts = [_momentum(beta1, t + 1, momentum_decay) for t in step_values]
    torch._foreach_mul_(mu_products, mus)
    torch._foreach_div_(denoms, [(1 - beta2**t) ** 0.5 for t in step_values])
    torch._foreach_add_(denoms, eps)
    sizes = [_step_sizes(lr, mu, mu_next, mp.item()) for mu, mu_next, mp in zip(mus, mu_nexts, mu_products)]
    torch._foreach_addcdiv_(params, grads, denoms, [s[0] for s in sizes])
    torch._foreach_addcdiv_(params, exp_avgs, denoms, [s[1] for s in sizes])
