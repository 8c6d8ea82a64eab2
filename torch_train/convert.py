"""The torch end of a conversion from JAX: NumPy state to tensors, and the lr scheduler's position.

``jax_train.convert`` (and ``twinopt.convert``) return model and optimizer ``state_dict``s whose
arrays are NumPy; :func:`to_tensors` makes the tensors ``load_state_dict`` needs. An lr
scheduler's position is not part of an optimizer state: :func:`advance_scheduler` puts a fresh
scheduler where a run that took ``steps`` steps has it. Imports torch, never jax.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch


def to_tensors(tree):
    """``tree`` (dicts, lists, tuples) with every NumPy array replaced by a tensor (own memory)."""
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(np.array(tree))
    if isinstance(tree, dict):
        return {k: to_tensors(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_tensors(v) for v in tree)
    return tree


def advance_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> None:
    """Step a freshly built ``scheduler`` ``steps`` times: the param groups' lr and the
    scheduler's state are then exactly those of a run that took ``steps`` optimizer steps
    (the same computation, also for recursive schedulers such as ExponentialLR)."""
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": on purpose here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            scheduler.step()
