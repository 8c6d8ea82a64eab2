"""Float64 NumPy transcriptions of the official updates torch.optim does not have.

Written from the papers and the arithmetic of the official code, operation by operation in
its order, so that torch_opt and jax_opt are checked against an independent implementation:

- AdaBound / AMSBound: Luo et al., ICLR 2019; Luolc/AdaBound ``adabound.py``.
- AggMo: Lucas et al., ICLR 2019; AtheMathmo/AggMo ``aggmo.py``.
- Lion: Chen et al., NeurIPS 2023, Program 1; google/automl ``lion/lion_pytorch.py``.
- AdaBelief: Zhuang et al., NeurIPS 2020; juntang-zhuang/Adabelief-Optimizer ``adabelief-pytorch`` 0.2.1
  (commit 2855178e).
- Adan: Xie et al., TPAMI 2024 (arXiv:2208.06677); sail-sg/Adan ``adan.py`` (commit f0b1b81).
- LAMB and LARS: You et al., ICLR 2020 and arXiv:1708.03888; ``optax.lamb`` / ``optax.lars`` of optax
  0.2.8 (``optax/_src/alias.py``, ``transform.py``), the reference these keys follow.
- ADOPT: Taniguchi et al., NeurIPS 2024; iShohei220/adopt ``src/adopt/adopt.py`` (commit 6468572).
- AdEMAMix: Pagliardini, Ablin & Grangier, arXiv:2409.03137 (2024); apple/ml-ademamix
  ``pytorch/ademamix.py`` (commit c3d73c0).
- Lookahead: Zhang et al., NeurIPS 2019, Algorithm 1; michaelrzhang/lookahead.

Each takes the initial params as a list of param groups (lists of arrays) and one dict of
hyperparameters per group, and exposes ``step(grads)``, ``params()`` and ``set_params()``.
"""

from __future__ import annotations

import math

import numpy as np


class _Reference:
    defaults: dict = {}

    def __init__(self, params, group_kwargs):
        self.groups = [[np.array(a, dtype=np.float64) for a in group] for group in params]
        self.hparams = [{**self.defaults, **kw} for kw in group_kwargs]
        self.state = [[None] * len(group) for group in self.groups]

    def step(self, grads):
        for gi, (group, hp) in enumerate(zip(self.groups, self.hparams)):
            for i, (p, g) in enumerate(zip(group, grads[gi])):
                self.state[gi][i] = self._update(p, np.asarray(g, np.float64), self.state[gi][i], hp)

    def params(self):
        return [p.copy() for group in self.groups for p in group]

    def set_lrs(self, lrs):
        """What a learning-rate scheduler does: set each group's current lr."""
        for hp, lr in zip(self.hparams, lrs):
            hp["lr"] = lr

    def set_params(self, values):
        flat = [p for group in self.groups for p in group]
        for p, v in zip(flat, values):
            p[...] = v


class AdaBound(_Reference):
    """Luolc/AdaBound: Adam whose per-element step size is clipped into bounds that converge
    to ``final_lr * lr / initial_lr``; L2 decay added to the gradient."""

    defaults = dict(lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8,
                    weight_decay=0.0, amsbound=False)

    def __init__(self, params, group_kwargs):
        super().__init__(params, group_kwargs)
        for hp in self.hparams:
            hp["base_lr"] = hp["lr"]  # the official code's self.base_lrs

    def _update(self, p, g, st, hp):
        if st is None:
            st = dict(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p), max_exp_avg_sq=np.zeros_like(p))
        beta1, beta2 = hp["betas"]
        st["step"] += 1
        if hp["weight_decay"] != 0:
            g = g + hp["weight_decay"] * p
        st["exp_avg"] = st["exp_avg"] * beta1 + (1 - beta1) * g
        st["exp_avg_sq"] = st["exp_avg_sq"] * beta2 + (1 - beta2) * g * g
        if hp["amsbound"]:
            st["max_exp_avg_sq"] = np.maximum(st["max_exp_avg_sq"], st["exp_avg_sq"])
            denom = np.sqrt(st["max_exp_avg_sq"]) + hp["eps"]
        else:
            denom = np.sqrt(st["exp_avg_sq"]) + hp["eps"]
        bias_correction1 = 1 - beta1 ** st["step"]
        bias_correction2 = 1 - beta2 ** st["step"]
        step_size = hp["lr"] * math.sqrt(bias_correction2) / bias_correction1
        final_lr = hp["final_lr"] * hp["lr"] / hp["base_lr"]
        lower_bound = final_lr * (1 - 1 / (hp["gamma"] * st["step"] + 1))
        upper_bound = final_lr * (1 + 1 / (hp["gamma"] * st["step"]))
        step = np.clip(np.full_like(denom, step_size) / denom, lower_bound, upper_bound) * st["exp_avg"]
        p -= step
        return st


class AggMo(_Reference):
    """AtheMathmo/AggMo: K momentum buffers ``v_i = beta_i v_i + g``; ``p -= lr/K * v_i`` for each."""

    defaults = dict(lr=0.1, betas=(0.0, 0.9, 0.99), weight_decay=0.0)

    def _update(self, p, g, st, hp):
        betas = hp["betas"]
        if hp["weight_decay"] != 0:
            g = g + hp["weight_decay"] * p
        if st is None:
            st = {beta: np.zeros_like(p) for beta in betas}
        for beta in betas:
            st[beta] = st[beta] * beta + g
            p -= hp["lr"] / len(betas) * st[beta]
        return st


class Lion(_Reference):
    """google/automl's Lion: decoupled decay ``p *= 1 - lr * wd``; ``p -= lr * sign(b1 m + (1 - b1) g)``;
    then ``m = b2 m + (1 - b2) g``."""

    defaults = dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)

    def _update(self, p, g, st, hp):
        beta1, beta2 = hp["betas"]
        if st is None:
            st = dict(exp_avg=np.zeros_like(p))
        p *= 1 - hp["lr"] * hp["weight_decay"]
        update = st["exp_avg"] * beta1 + g * (1 - beta1)
        p -= hp["lr"] * np.sign(update)
        st["exp_avg"] = st["exp_avg"] * beta2 + g * (1 - beta2)
        return st


def _trust_ratio(p, u, trust_coefficient, eps):
    """optax.scale_by_trust_ratio (min_norm 0): ``tc ||p|| / (||u|| + eps)``, 1 where a norm is 0."""
    norm_p, norm_u = np.linalg.norm(p), np.linalg.norm(u)
    return 1.0 if norm_p == 0 or norm_u == 0 else trust_coefficient * norm_p / (norm_u + eps)


class LAMB(_Reference):
    """optax 0.2.8's ``lamb``: ``scale_by_adam`` (eps_root 0), ``add_decayed_weights``,
    ``scale_by_trust_ratio()``, ``scale_by_learning_rate``, in that order."""

    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0)

    def _update(self, p, g, st, hp):
        beta1, beta2 = hp["betas"]
        if st is None:
            st = dict(count=0, mu=np.zeros_like(p), nu=np.zeros_like(p))
        st["mu"] = (1 - beta1) * g + beta1 * st["mu"]
        st["nu"] = (1 - beta2) * g**2 + beta2 * st["nu"]
        st["count"] += 1
        mu_hat = st["mu"] / (1 - beta1 ** st["count"])
        nu_hat = st["nu"] / (1 - beta2 ** st["count"])
        u = mu_hat / (np.sqrt(nu_hat + 0.0) + hp["eps"])
        if hp["weight_decay"] != 0:
            u = u + hp["weight_decay"] * p
        u = u * _trust_ratio(p, u, 1.0, 0.0)
        p += -hp["lr"] * u
        return st


class LARS(_Reference):
    """optax 0.2.8's ``lars``: ``add_decayed_weights``, ``scale_by_trust_ratio``,
    ``scale_by_learning_rate`` (so the trace holds lr-scaled, negated updates), ``trace``;
    ``exclude_vectors`` is its two masks, False for params with fewer than two dimensions."""

    defaults = dict(lr=1e-3, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0, nesterov=False,
                    exclude_vectors=False)

    def _update(self, p, g, st, hp):
        if st is None:
            st = dict(trace=np.zeros_like(p))
        u = g
        if not hp["exclude_vectors"] or p.ndim > 1:
            if hp["weight_decay"] != 0:
                u = u + hp["weight_decay"] * p
            u = u * _trust_ratio(p, u, hp["trust_coefficient"], hp["eps"])
        u = -hp["lr"] * u
        st["trace"] = u + hp["momentum"] * st["trace"]
        p += u + hp["momentum"] * st["trace"] if hp["nesterov"] else st["trace"]
        return st


class AdaBelief(_Reference):
    """juntang-zhuang/Adabelief-Optimizer, ``adabelief-pytorch`` 0.2.1 (commit 2855178e): the second
    moment is the mean squared deviation ``(g - m)^2``, eps added to it in place every step;
    decoupled decay by default; RAdam's rectification by default (``rho_t >= 5``), SGD steps before."""

    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, amsgrad=False,
                    weight_decouple=True, fixed_decay=False, rectify=True, degenerated_to_sgd=True)

    def _update(self, p, g, st, hp):
        beta1, beta2 = hp["betas"]
        if st is None:
            st = dict(step=0, exp_avg=np.zeros_like(p), exp_avg_var=np.zeros_like(p),
                      max_exp_avg_var=np.zeros_like(p))
        if hp["weight_decouple"]:
            if not hp["fixed_decay"]:
                p *= 1.0 - hp["lr"] * hp["weight_decay"]
            else:
                p *= 1.0 - hp["weight_decay"]
        elif hp["weight_decay"] != 0:
            g = g + hp["weight_decay"] * p
        st["step"] += 1
        step = st["step"]
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        st["exp_avg"] = st["exp_avg"] * beta1 + (1 - beta1) * g
        grad_residual = g - st["exp_avg"]
        st["exp_avg_var"] = st["exp_avg_var"] * beta2 + (1 - beta2) * grad_residual * grad_residual
        st["exp_avg_var"] = st["exp_avg_var"] + hp["eps"]  # the official exp_avg_var.add_(eps)
        if hp["amsgrad"]:
            st["max_exp_avg_var"] = np.maximum(st["max_exp_avg_var"], st["exp_avg_var"])
            denom = np.sqrt(st["max_exp_avg_var"]) / math.sqrt(bias_correction2) + hp["eps"]
        else:
            denom = np.sqrt(st["exp_avg_var"]) / math.sqrt(bias_correction2) + hp["eps"]
        if not hp["rectify"]:
            step_size = hp["lr"] / bias_correction1
            p -= step_size * (st["exp_avg"] / denom)
            return st
        beta2_t = beta2**step
        n_sma_max = 2 / (1 - beta2) - 1
        n_sma = n_sma_max - 2 * step * beta2_t / (1 - beta2_t)
        if n_sma >= 5:
            step_size = math.sqrt((1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max
                                  / (n_sma_max - 2)) / (1 - beta1**step)
        elif hp["degenerated_to_sgd"]:
            step_size = 1.0 / (1 - beta1**step)
        else:
            step_size = -1
        if n_sma >= 5:
            denom = np.sqrt(st["exp_avg_var"]) + hp["eps"]  # the current s, not the max (amsgrad)
            p -= step_size * hp["lr"] * (st["exp_avg"] / denom)
        elif step_size > 0:
            p -= step_size * hp["lr"] * st["exp_avg"]
        return st


class Adan(_Reference):
    """sail-sg/Adan ``adan.py`` (commit f0b1b81, the file at the repository's 2c65bea), its
    per-tensor path: moments of the gradient, of its difference from the previous one, and of
    ``g + b2 * diff`` squared; the step divided by ``1 + lr * wd`` (``no_prox=True``: decay as
    AdamW). ``max_grad_norm`` (the official code's is the constructor's, one for every group)
    clips the gradients of all groups together by their global norm; each group counts its steps."""

    defaults = dict(lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, max_grad_norm=0.0, no_prox=False)

    def __init__(self, params, group_kwargs):
        super().__init__(params, group_kwargs)
        norms = {hp["max_grad_norm"] for hp in self.hparams}
        assert len(norms) == 1, f"the official code has one max_grad_norm for all groups, not {norms}"
        self.max_grad_norm = norms.pop()
        self.steps = [0] * len(self.groups)

    def step(self, grads):
        grads = [[np.asarray(g, np.float64) for g in group] for group in grads]
        clip_global_grad_norm = 1.0
        if self.max_grad_norm > 0:
            global_grad_norm = math.sqrt(sum(float(np.sum(g**2)) for group in grads for g in group))
            # The official code reads ``group['eps']`` after its loop over the groups: the last group's.
            clip_global_grad_norm = min(self.max_grad_norm / (global_grad_norm + self.hparams[-1]["eps"]), 1.0)
        for gi, (group, hp) in enumerate(zip(self.groups, self.hparams)):
            self.steps[gi] += 1
            for i, (p, g) in enumerate(zip(group, grads[gi])):
                self.state[gi][i] = self._adan(p, g, self.state[gi][i], hp, self.steps[gi], clip_global_grad_norm)

    def _adan(self, p, g, st, hp, step, clip):
        beta1, beta2, beta3 = hp["betas"]
        lr, weight_decay, eps = hp["lr"], hp["weight_decay"], hp["eps"]
        if st is None:
            st = dict(exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p), exp_avg_diff=np.zeros_like(p))
        if "neg_pre_grad" not in st or step == 1:
            st["neg_pre_grad"] = g * -clip
        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
        bias_correction3_sqrt = math.sqrt(1.0 - beta3**step)
        g = g * clip
        diff = st["neg_pre_grad"] + g
        st["exp_avg"] = st["exp_avg"] * beta1 + (1 - beta1) * g
        st["exp_avg_diff"] = st["exp_avg_diff"] * beta2 + (1 - beta2) * diff
        update = diff * beta2 + g
        st["exp_avg_sq"] = st["exp_avg_sq"] * beta3 + (1 - beta3) * update * update
        denom = np.sqrt(st["exp_avg_sq"]) / bias_correction3_sqrt + eps
        step_size_diff = lr * beta2 / bias_correction2
        step_size = lr / bias_correction1
        if hp["no_prox"]:
            p *= 1 - lr * weight_decay
            p -= step_size * (st["exp_avg"] / denom)
            p -= step_size_diff * (st["exp_avg_diff"] / denom)
        else:
            p -= step_size * (st["exp_avg"] / denom)
            p -= step_size_diff * (st["exp_avg_diff"] / denom)
            p /= 1 + lr * weight_decay
        st["neg_pre_grad"] = -g
        return st


class ADOPT(_Reference):
    """iShohei220/adopt ``src/adopt/adopt.py`` at 6468572 (``_single_tensor_adopt``): the first step
    only sets ``v = g * g``; then ``n = clip(g / max(sqrt(v), eps), +-clip_lambda(t))`` with the
    0-based step t, ``m = lerp(m, n, 1 - b1)``, ``p -= lr * m``, ``v = b2 v + (1 - b2) g g``; L2 decay
    on the gradient at every step, or (decouple) ``p -= lr * wd * p`` from the second step.
    ``unclipped`` (torch_opt's keyword) is ``clip_lambda=None``."""

    defaults = dict(lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, clip_lambda=lambda step: step**0.25, weight_decay=0.0,
                    decouple=False, unclipped=False)

    def _update(self, p, g, st, hp):
        if st is None:
            st = dict(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
        beta1, beta2 = hp["betas"]
        lr, weight_decay, step = hp["lr"], hp["weight_decay"], st["step"]
        clip_lambda = None if hp["unclipped"] else hp["clip_lambda"]
        if weight_decay != 0 and not hp["decouple"]:
            g = g + weight_decay * p
        if step == 0:
            st["exp_avg_sq"] = st["exp_avg_sq"] + g * g
            st["step"] += 1
            return st
        if weight_decay != 0 and hp["decouple"]:
            p += -lr * weight_decay * p
        denom = np.maximum(np.sqrt(st["exp_avg_sq"]), hp["eps"])
        normed_grad = g / denom
        if clip_lambda is not None:
            clip = clip_lambda(step)
            normed_grad = np.clip(normed_grad, -clip, clip)
        st["exp_avg"] = st["exp_avg"] + (1 - beta1) * (normed_grad - st["exp_avg"])
        p += -lr * st["exp_avg"]
        st["exp_avg_sq"] = st["exp_avg_sq"] * beta2 + (1 - beta2) * g * g
        st["step"] += 1
        return st


def _linear_warmup_scheduler(step, alpha_end, alpha_start=0, warmup=1):
    """apple/ml-ademamix ``pytorch/ademamix.py``: alpha's linear warmup."""
    if step < warmup:
        a = step / float(warmup)
        return (1.0 - a) * alpha_start + a * alpha_end
    return alpha_end


def _linear_hl_warmup_scheduler(step, beta_end, beta_start=0, warmup=1):
    """apple/ml-ademamix ``pytorch/ademamix.py``: beta3's warmup, linear in the half-life."""

    def f(beta, eps=1e-8):
        return math.log(0.5) / math.log(beta + eps) - 1

    def f_inv(t):
        return math.pow(0.5, 1 / (t + 1))

    if step < warmup:
        a = step / float(warmup)
        return f_inv((1.0 - a) * f(beta_start) + a * f(beta_end))
    return beta_end


class AdEMAMix(_Reference):
    """apple/ml-ademamix ``pytorch/ademamix.py`` at c3d73c0: Adam whose numerator adds
    ``alpha * m_slow``, a second, slow EMA of the gradient (decay beta3, not bias-corrected);
    optional warmups of alpha and beta3 over the 1-based step; decay ``update += wd * p``
    before ``p -= lr * update``. With beta1 = 0 the fast EMA is the gradient itself."""

    defaults = dict(lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=2.0, beta3_warmup=None, alpha_warmup=None, eps=1e-8,
                    weight_decay=0.0)

    def _update(self, p, g, st, hp):
        beta1, beta2, beta3_final = hp["betas"]
        if st is None:
            st = dict(step=0, exp_avg_fast=np.zeros_like(p) if beta1 != 0.0 else None, exp_avg_slow=np.zeros_like(p),
                      exp_avg_sq=np.zeros_like(p))
        st["step"] += 1
        bias_correction1 = 1 - beta1 ** st["step"]
        bias_correction2 = 1 - beta2 ** st["step"]
        if hp["alpha_warmup"] is not None:
            alpha = _linear_warmup_scheduler(st["step"], alpha_end=hp["alpha"], alpha_start=0,
                                             warmup=hp["alpha_warmup"])
        else:
            alpha = hp["alpha"]
        if hp["beta3_warmup"] is not None:
            beta3 = _linear_hl_warmup_scheduler(st["step"], beta_end=beta3_final, beta_start=beta1,
                                                warmup=hp["beta3_warmup"])
        else:
            beta3 = beta3_final
        if beta1 != 0.0:
            st["exp_avg_fast"] = st["exp_avg_fast"] * beta1 + (1 - beta1) * g
            exp_avg_fast = st["exp_avg_fast"]
        else:
            exp_avg_fast = g
        st["exp_avg_slow"] = st["exp_avg_slow"] * beta3 + (1 - beta3) * g
        st["exp_avg_sq"] = st["exp_avg_sq"] * beta2 + (1 - beta2) * g * g
        denom = np.sqrt(st["exp_avg_sq"]) / math.sqrt(bias_correction2) + hp["eps"]
        update = (exp_avg_fast / bias_correction1 + alpha * st["exp_avg_slow"]) / denom
        update = update + hp["weight_decay"] * p
        p += -hp["lr"] * update
        return st


class Lookahead:
    """Zhang et al. 2019, Algorithm 1 around any stepper: the slow weights start at the initial
    params; after every k-th inner step, ``slow += alpha (fast - slow)`` and ``fast = slow``."""

    def __init__(self, inner, k=5, alpha=0.5):
        self.inner, self.k, self.alpha = inner, k, alpha
        self.slow = [p.astype(np.float64) for p in inner.params()]
        self.count = 0

    def step(self, grads):
        self.inner.step(grads)
        self.count += 1
        if self.count % self.k == 0:
            fast = self.inner.params()
            self.slow = [s + (f - s) * self.alpha for s, f in zip(self.slow, fast)]
            self.inner.set_params(self.slow)

    def params(self):
        return self.inner.params()
