"""Float64 NumPy transcriptions of the official updates torch.optim does not have.

Written from the papers and the arithmetic of the official code, operation by operation in
its order, so that torch_opt and jax_opt are checked against an independent implementation:

- AdaBound / AMSBound: Luo et al., ICLR 2019; Luolc/AdaBound ``adabound.py``.
- AggMo: Lucas et al., ICLR 2019; AtheMathmo/AggMo ``aggmo.py``.
- Lion: Chen et al., NeurIPS 2023, Program 1; google/automl ``lion/lion_pytorch.py``.
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


# ANCHOR issue 17: rprop, asgd


# ANCHOR issue 17: lamb, lars


# ANCHOR issue 17: adabelief, adan


# ANCHOR issue 17: adopt, ademamix


# ANCHOR issue 17: adafactor


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
