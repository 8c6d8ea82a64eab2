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
