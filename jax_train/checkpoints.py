"""Checkpoints of ``jax_train.train`` (``python train_jax.py``), and JAX trees to and from PyTorch's layouts.

Checkpoints:

- :func:`checkpoint_bytes`: the ``.npz`` bytes of a checkpoint: params and optimizer state under
  their key paths (``params/fc1/kernel``, ``opt_state/1/mu/fc1/kernel``), and the meta as JSON.
- :func:`load_checkpoint`: params, optimizer state and position of a checkpoint of either
  backend (:func:`read_other_backend_checkpoint` reads and converts ``torch_train``'s ``.pt``
  files, without torch).

Conversion (also for moving runs and models between the frameworks):

- :func:`to_torch_state_dict` / :func:`load_torch_state_dict`: model weights.
- :func:`opt_state_to_torch` / :func:`opt_state_from_torch`: the whole optimizer state of every
  ``jax_opt`` optimizer, Lookahead and schedules included, to and from a ``torch_opt`` optimizer's
  ``state_dict``.
- :func:`flatten` / :func:`unflatten`: a JAX tree as a flat dict ``{"fc1/kernel": array}``, the
  form ``twinopt.convert`` and the checkpoints use.
- :func:`stacked_names` / :func:`split_stacked`: the names of checkpoints written before
  ``jax_opt.aggmo`` kept its K velocities as K trees (one ``(K, *param_shape)`` array per param
  then), and such a flat state split into today's entries.

The layouts and the rules are in ``twinopt.convert``; conversions are exact (transposes and
reshapes). Torch tensors are accepted as they are (by duck typing); what goes to torch is NumPy
(``torch_train.checkpoints.to_tensors``). Imports jax/flax/numpy, never torch.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from jax_opt.aggmo import ScaleByAggMoState
from twinopt import convert, runs, torch_pickle
from twinopt.convert import ConversionError


def _path(keypath) -> str:
    path = jax.tree_util.keystr(keypath, simple=True, separator="/")
    return path.removesuffix("/value")  # an nnx.Variable's array


def _leaves(tree) -> dict:
    return {_path(keypath): leaf for keypath, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def flatten(tree) -> dict[str, np.ndarray]:
    """``{"/"-joined key path: NumPy array}`` for every leaf of ``tree``, in leaf order."""
    return {path: np.asarray(leaf) for path, leaf in _leaves(tree).items()}


def unflatten(template, flat: Mapping[str, np.ndarray]):
    """A tree shaped like ``template`` with the values of ``flat`` (cast to the template's dtypes).

    Missing or unexpected entries and other shapes raise ``ConversionError`` naming them."""
    keypaths, treedef = jax.tree_util.tree_flatten_with_path(template)
    paths = [_path(keypath) for keypath, _ in keypaths]
    missing, unexpected = sorted(set(paths) - set(flat)), sorted(set(flat) - set(paths))
    if missing or unexpected:
        raise ConversionError(f"the state does not match: missing entries {missing}, unexpected entries {unexpected}")
    leaves = []
    for path, (_, want) in zip(paths, keypaths):
        value = convert.as_array(flat[path])
        if value.shape != want.shape:
            raise ConversionError(f"{path}: expected shape {want.shape}, got {value.shape}")
        leaves.append(jnp.asarray(value, dtype=want.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _is_aggmo(node) -> bool:
    return isinstance(node, ScaleByAggMoState)


def _stacked_layout(opt_state) -> list[tuple[str, list[str]]]:
    """``(stacked name, [names])`` for every leaf of ``opt_state`` in the stacked AggMo layout, in
    leaf order: each AggMo velocity ``.../trace/fc1/kernel`` (shape ``(K, *param_shape)``) with the
    K names ``.../trace/<i>/fc1/kernel`` that split it, every other leaf its own name with itself."""
    layout = []
    for keypath, node in jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_aggmo)[0]:
        if not _is_aggmo(node):
            layout.append((_path(keypath), [_path(keypath)]))
            continue
        stacks = {}  # velocity i of a param: (trace key, index i, *the param's key path)
        for sub, _ in jax.tree_util.tree_leaves_with_path(node):
            stacks.setdefault(_path(keypath + sub[:1] + sub[2:]), []).append(_path(keypath + sub))
        layout += stacks.items()
    return layout


def stacked_names(opt_state) -> list[str]:
    """The flat names of ``opt_state`` in leaf order as train_jax.py wrote them before AggMo's
    velocities were separate trees: ``1/trace/fc1/kernel`` for ``1/trace/0/fc1/kernel`` ...
    ``1/trace/<K-1>/fc1/kernel``; the other names as ``flatten`` gives them."""
    return [stacked for stacked, _ in _stacked_layout(opt_state)]


def split_stacked(flat_state: Mapping[str, np.ndarray], opt_state) -> dict[str, np.ndarray]:
    """``flat_state`` with each stacked AggMo velocity of ``opt_state``'s AggMo states (an entry
    ``1/trace/fc1/kernel`` of shape ``(K, *param_shape)``, as train_jax.py saved them before the
    velocities were K trees) split into the K entries ``1/trace/<i>/fc1/kernel`` that ``opt_state``
    has. Entries already split, and every other entry, are kept as they are; a stacked entry of
    another K raises ``ConversionError`` naming it."""
    out = dict(flat_state)
    for stacked, names in _stacked_layout(opt_state):
        if names == [stacked] or stacked not in out or any(name in out for name in names):
            continue
        value = convert.as_array(out.pop(stacked))
        if value.ndim == 0 or value.shape[0] != len(names):
            found = value.shape[0] if value.ndim else "no"
            raise ConversionError(f"{stacked}: {found} stacked velocities (shape {value.shape}), this optimizer "
                                  f"keeps {len(names)} ({names[0]}, ...): another number of betas?")
        out.update({name: value[i] for i, name in enumerate(names)})
    return out


def _params(model_or_params):
    if isinstance(model_or_params, nnx.Module):
        return nnx.state(model_or_params, nnx.Param)
    return model_or_params


def layout(model_or_params) -> convert.Layout:
    """The parameter layout of a model (or of its params: an ``nnx.State`` or a pure dict), which
    may be abstract (``nnx.eval_shape``)."""
    return convert.Layout.from_jax(_leaves(_params(model_or_params)))


def to_torch_state_dict(model: nnx.Module, params=None) -> dict[str, np.ndarray]:
    """The model's params as a PyTorch ``state_dict`` of NumPy arrays (names, order and layout).

    ``params``: optionally a tree shaped like the model's ``nnx.state(model, nnx.Param)`` (an
    ``nnx.State`` or its ``nnx.to_pure_dict``), e.g. the gradients from ``nnx.grad`` or a functional
    training loop's params, converted instead of the model's own values. Arrays keep their dtype.
    """
    return convert.weights_to_torch(flatten(_params(model if params is None else params)))


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping) -> None:
    """Set the model's params, in place, from a PyTorch-layout state dict.

    Values: NumPy arrays, tensors or anything ``np.asarray`` accepts; they are cast to the
    model's param dtype. Everything is checked before anything is set: missing or unexpected
    keys, or a shape that does not match the model, raise ``ConversionError`` (a ValueError)
    naming the entry and the expected and found shapes.
    """
    state = nnx.state(model, nnx.Param)
    flat = convert.weights_from_torch(state_dict, layout(state))
    nnx.update(model, unflatten(state, flat))


def opt_state_to_torch(model_or_params, opt_state, template: Mapping, key: str) -> dict:
    """``opt_state`` of ``jax_opt.OPTIMIZERS[key]`` (optionally in ``jax_opt.lookahead``) as the
    ``state_dict`` of the matching torch optimizer.

    ``template``: that torch optimizer's ``state_dict()`` (built on ``model.parameters()`` with the
    same hyperparameters); its param groups are kept. A torch lr scheduler is not part of it: step
    it as many times as the count (``torch_train.checkpoints.advance_scheduler``).
    """
    return convert.optimizer_state_to_torch(flatten(opt_state), template, key, layout(model_or_params))


def opt_state_from_torch(model_or_params, opt_state, state_dict: Mapping, key: str, step: int | None = None):
    """A torch optimizer's ``state_dict`` as a state shaped like ``opt_state`` (the fresh
    ``tx.init(params)`` of ``jax_opt.OPTIMIZERS[key]``, optionally in ``jax_opt.lookahead``).

    Every count of the result (the optimizer's, a schedule's, Lookahead's) is the number of steps
    taken; ``step`` gives it where the torch state does not (SGD with momentum, AggMo).
    """
    flat = convert.optimizer_state_from_torch(state_dict, flatten(opt_state), key, layout(model_or_params), step)
    return unflatten(opt_state, flat)


# ---- checkpoints --------------------------------------------------------------------------------


def checkpoint_bytes(params, opt_state, meta):
    """The npz bytes: params and optimizer state under their key paths (``params/fc1/kernel``,
    ``opt_state/1/mu/fc1/kernel``: :func:`flatten`), so that train_torch.py can read them without
    JAX, and ``meta`` as JSON."""
    if jax.process_count() > 1:  # every process takes part; only the first writes
        params, opt_state = multihost_utils.process_allgather((params, opt_state), tiled=True)
    arrays = {f"{part}/{path}": value for part, tree in (("params", params), ("opt_state", opt_state))
              for path, value in flatten(tree).items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, meta=np.array(json.dumps(meta)))
    return buffer.getvalue()


def read_other_backend_checkpoint(path, run, key, params, opt_state):
    """``(params, opt_state)`` as flat dicts and the meta of a train_torch.py checkpoint, read
    without torch and converted (``twinopt.convert``)."""
    try:
        ckpt = torch_pickle.load(path)
    except torch_pickle.UnsafeCheckpoint as err:
        raise runs.CheckpointError(f"{err}. Only use checkpoints train_torch.py wrote; move the file out of the "
                                   "folder to resume from the checkpoint before it.") from None
    except (torch_pickle.NotATorchCheckpoint, torch_pickle.UnsupportedCheckpoint) as err:
        raise runs.CheckpointError(str(err)) from None
    run.check_fingerprint(path, ckpt.get("config") if isinstance(ckpt, dict) else None)
    try:
        params_layout = layout(params)
        flat_params = convert.weights_from_torch(ckpt["model"], params_layout)
        flat_state = convert.optimizer_state_from_torch(ckpt["optimizer"], flatten(opt_state), key, params_layout,
                                                        ckpt["step"])
        meta = {name: ckpt[name] for name in ("epoch", "step", "epoch_state")}
    except (KeyError, TypeError, convert.ConversionError) as err:
        raise runs.CheckpointError(f"{path} does not fit this run's model and optimizer ({err})") from None
    return flat_params, flat_state, meta


def load_checkpoint(path, run, key, params, opt_state):
    """``(params, opt_state, epoch, epoch_state)`` from a checkpoint of either script, the state in
    the structure of ``(params, opt_state)``; raise runs.CheckpointError if the file is not a
    checkpoint of this run."""
    if path.endswith(".pt"):
        flat_params, flat_state, meta = read_other_backend_checkpoint(path, run, key, params, opt_state)
    else:
        meta, arrays = runs.read_npz(path)
        run.check_fingerprint(path, meta.get("config"))
        if "num_leaves" in meta:  # written before the entries had names: the leaves in order
            # (and before AggMo's velocities were separate arrays: its entries are stacked)
            names = [f"params/{p}" for p in flatten(params)]
            names += [f"opt_state/{p}" for p in stacked_names(opt_state)]
            if meta["num_leaves"] != len(names):
                raise runs.CheckpointError(f"{path} holds {meta['num_leaves']} arrays, this run's model and "
                                           f"optimizer {len(names)}")
            arrays = {name: arrays[f"arr_{i}"] for i, name in enumerate(names)}
        flat_params, flat_state = runs.npz_part(arrays, "params"), runs.npz_part(arrays, "opt_state")
    try:
        if not path.endswith(".pt"):  # AggMo's velocities stacked, as train_jax.py saved them before: split
            flat_state = split_stacked(flat_state, opt_state)
        params, opt_state = unflatten(params, flat_params), unflatten(opt_state, flat_state)
    except convert.ConversionError as err:
        raise runs.CheckpointError(f"{path} does not fit this run's model and optimizer ({err})") from None
    return params, opt_state, meta["epoch"], meta["epoch_state"]
