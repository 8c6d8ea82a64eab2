"""Learning-rate schedules as one formula for both backends.

``lr_factor(kind, step, total_steps, xp)`` is the factor applied to the base learning rate
at the 0-based optimizer step ``step``. It uses only arithmetic, comparisons and ``xp.cos``,
so the same code runs with ``xp=math`` (a torch ``LambdaLR`` stepped after every optimizer
step) and ``xp=jax.numpy`` (an optax schedule of the update count): both backends follow
the same learning rates.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "step", "cosine")


def lr_factor(kind, step, total_steps, xp=math):
    """constant: 1. step: x0.1 at 50% and again at 75% of the steps. cosine: from 1 to 0
    over ``total_steps`` (half a cosine period), 0 after."""
    if kind == "constant":
        return 1.0
    if kind == "step":
        passed = (step >= int(0.5 * total_steps)) * 1 + (step >= int(0.75 * total_steps)) * 1
        return 0.1**passed
    if kind == "cosine":
        minimum = min if xp is math else xp.minimum
        return 0.5 * (1.0 + xp.cos(math.pi * minimum(step / total_steps, 1.0)))
    raise ValueError(f"Unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}.")


# The per-step schedules inside two optimizers, in the same one-formula style: ``xp=math`` in
# torch_opt (Python doubles, as the official PyTorch codes compute them), ``xp=jax.numpy`` in jax_opt.


def adopt_clip(step):
    """ADOPT's default clipping value at the 0-based step ``step``: ``step ** 0.25`` (the official
    code's default ``clip_lambda``, the schedule its README says keeps the convergence guarantee)."""
    return step**0.25


def _select(xp, condition, if_true, if_false):
    return (if_true if condition else if_false) if xp is math else xp.where(condition, if_true, if_false)


def ademamix_alpha(step, alpha, warmup, xp=math):
    """AdEMAMix's alpha at the 1-based step ``step``: ``alpha * step / warmup`` while ``step < warmup``,
    then ``alpha`` (apple/ml-ademamix ``linear_warmup_scheduler`` with ``alpha_start=0``, whose
    ``(1 - a) * 0 +`` adds an exact zero); ``warmup=None``: ``alpha`` throughout."""
    if warmup is None:
        return alpha
    return _select(xp, step < warmup, step / warmup * alpha, alpha)


def ademamix_beta3(step, beta3, beta1, warmup, xp=math):
    """AdEMAMix's beta3 at the 1-based step ``step``: the half-life ``f(b) = ln 0.5 / ln(b + 1e-8) - 1``
    interpolated linearly from ``f(beta1)`` to ``f(beta3)`` while ``step < warmup`` and mapped back by
    ``f^-1(t) = 0.5 ** (1 / (t + 1))``, then ``beta3`` (apple/ml-ademamix
    ``linear_hl_warmup_scheduler`` with ``beta_start=beta1``, its 1e-8 included); ``warmup=None``:
    ``beta3`` throughout."""
    if warmup is None:
        return beta3

    def half_life(beta):
        return math.log(0.5) / xp.log(beta + 1e-8) - 1

    a = step / warmup  # the official code's step / float(warmup), which a traced warmup cannot take
    return _select(xp, step < warmup, 0.5 ** (1 / ((1.0 - a) * half_life(beta1) + a * half_life(beta3) + 1)), beta3)
