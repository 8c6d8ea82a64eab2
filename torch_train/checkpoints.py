"""Checkpoints of ``torch_train.train`` (``python train_torch.py``), and the torch end of a conversion from JAX.

Checkpoints:

- :func:`checkpoint_bytes`: the ``torch.save`` bytes of a checkpoint: model, optimizer and lr
  scheduler ``state_dict``s, and the meta.
- :func:`load_checkpoint`: restore a checkpoint of either backend into the model, optimizer and
  scheduler (:func:`read_other_backend_checkpoint` reads and converts ``jax_train``'s ``.npz``
  files, without JAX).

Conversion: ``jax_train.checkpoints`` (and ``twinopt.convert``) return model and optimizer
``state_dict``s whose arrays are NumPy; :func:`to_tensors` makes the tensors ``load_state_dict``
needs. An lr scheduler's position is not part of an optimizer state: :func:`advance_scheduler`
puts a fresh scheduler where a run that took ``steps`` steps has it. Imports torch, never jax.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings

import numpy as np
import torch

from twinopt import convert, runs


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


# ---- checkpoints --------------------------------------------------------------------------------


def checkpoint_bytes(model, opt, scheduler, meta):
    """The torch.save bytes: the model's, optimizer's and scheduler's state_dicts and ``meta``
    (``epoch``, ``step``, ``epoch_state``, ``config``)."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": meta["epoch"],
                "step": meta["step"], "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "epoch_state": meta["epoch_state"], "config": meta["config"]}, buffer)
    return buffer.getvalue()


def read_other_backend_checkpoint(path, run, key, model, opt):
    """A train_jax.py checkpoint converted to this script's form (``twinopt.convert``; no JAX needed)."""
    meta, arrays = runs.read_npz(path)
    run.check_fingerprint(path, meta.get("config"))
    if "num_leaves" in meta:
        raise runs.CheckpointError(f"{path} was written by a train_jax.py that did not name its arrays; continue "
                                   "the run with train_jax.py")
    flat_params, flat_state = runs.npz_part(arrays, "params"), runs.npz_part(arrays, "opt_state")
    layout = convert.Layout({name: tuple(p.shape) for name, p in model.state_dict().items()})
    try:
        optimizer = convert.optimizer_state_to_torch(flat_state, opt.state_dict(), key, layout)
        return {**meta, "model": to_tensors(convert.weights_to_torch(flat_params)), "optimizer": to_tensors(optimizer)}
    except convert.ConversionError as err:
        raise runs.CheckpointError(f"{path} does not fit this run's model and optimizer ({err})") from None


def load_checkpoint(path, run, key, model, opt, scheduler):
    """``(epoch, epoch_state)`` of a checkpoint of either script, restored into the model,
    optimizer and scheduler (a torch one read with weights_only: a pickle never runs code);
    raise runs.CheckpointError if the file is not a checkpoint of this run."""
    if path.endswith(".npz"):
        ckpt = read_other_backend_checkpoint(path, run, key, model, opt)
    else:
        try:
            ckpt = torch.load(path, weights_only=True)
        except pickle.UnpicklingError as err:
            code = re.search(r"GLOBAL (\S+)", str(err))
            raise runs.CheckpointError(
                f"{path} holds pickled code ({code.group(1) if code else err}), which is never run: "
                "torch.load(weights_only=True) refused it. Only use checkpoints train_torch.py wrote; move the file "
                "out of the folder to resume from the checkpoint before it.") from None
        except RuntimeError as err:
            raise runs.CheckpointError(f"{path} is not a torch checkpoint ({str(err).splitlines()[0]})") from None
        run.check_fingerprint(path, ckpt.get("config") if isinstance(ckpt, dict) else None)
    try:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and path.endswith(".npz"):  # JAX keeps the schedule's position in its counts
            advance_scheduler(scheduler, ckpt["step"])
        elif scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        return ckpt["epoch"], ckpt["epoch_state"]
    except (KeyError, ValueError, RuntimeError) as err:
        raise runs.CheckpointError(f"{path} does not fit this run's model and optimizer ({err})") from None
