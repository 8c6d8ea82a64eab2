"""Flax NNX models and jax_opt optimizer states to and from PyTorch's layouts (NumPy arrays).

- :func:`to_torch_state_dict` / :func:`load_torch_state_dict`: model weights.
- :func:`opt_state_to_torch` / :func:`opt_state_from_torch`: the whole optimizer state of every
  ``jax_opt`` optimizer, Lookahead and schedules included, to and from a ``torch_opt`` optimizer's
  ``state_dict``.
- :func:`flatten` / :func:`unflatten`: a JAX tree as a flat dict ``{"fc1/kernel": array}``, the
  form ``twinopt.convert`` and train_jax.py's checkpoints use.
- :func:`stacked_names` / :func:`split_stacked`: the names of train_jax.py checkpoints written
  before ``jax_opt.aggmo`` kept its K velocities as K trees (one ``(K, *param_shape)`` array per
  param then), and such a flat state split into today's entries.

The layouts and the rules are in ``twinopt.convert``; conversions are exact (transposes and
reshapes). Torch tensors are accepted as they are (by duck typing); what goes to torch is NumPy
(``torch_train.convert.to_tensors``). Imports jax/flax/numpy, never torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_opt.aggmo import ScaleByAggMoState
from twinopt import convert
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
    it as many times as the count (``torch_train.convert.advance_scheduler``).
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
