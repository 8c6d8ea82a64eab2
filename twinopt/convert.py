"""Model weights and optimizer state between the PyTorch and JAX layouts, on NumPy arrays.

Both training scripts go through here to continue each other's runs, and so do
``jax_train.checkpoints`` (Flax models, optax states) and ``torch_train.checkpoints`` (tensors). This
module imports NumPy only: a JAX-only or a torch-only install can read the other backend's
checkpoints.

The two layouts:

- **torch**: a model ``state_dict`` (``fc1.weight`` ``(out, in)``, ``conv1.weight``
  ``(out, in, kh, kw)``, biases) and an optimizer ``state_dict``: ``{"state": {index: {name:
  array}}, "param_groups": [...]}`` with ``index`` the param's position in
  ``model.parameters()`` (= ``state_dict`` order); a ``Lookahead`` keeps the inner state under
  ``"inner_state"``, its slow weights as ``"slow_param"`` under ``"state"`` and its counter under
  ``"lookahead"``.
- **JAX, flat**: a dict from ``/``-joined key paths of the JAX trees to arrays. Weights:
  ``fc1/kernel`` ``(in, out)``, ``conv1/kernel`` ``(kh, kw, in, out)``, ``fc1/bias``. Optimizer
  state: the paths of the optax state, e.g. ``1/mu/fc1/kernel`` and ``1/count`` for
  ``jax_opt.adam``, ``inner_state/1/mu/fc1/kernel``, ``slow/fc1/kernel`` and ``count`` around
  ``jax_opt.lookahead`` (``jax_train.checkpoints.flatten`` writes them). A field with several arrays
  per param numbers them before the param's path: AggMo's K velocities are ``1/trace/0/fc1/kernel``
  ... ``1/trace/<K-1>/fc1/kernel``.

Weights move by transposes and reshapes only, so conversions are exact; so do the state entries that
are a param's statistic reduced over some axes, of size 1 there (Adafactor's row and column means,
kept on the axes torch's layout has last: ``jax_opt.adafactor(layout="flax")``). fc1 of the CNN also
permutes its input index: torch flattens the feature map as ``(C, H, W)``, Flax as ``(H, W, C)``.
Numbered JAX entries of a field are one torch entry stacked in index order: AggMo's velocities are
torch's ``momentum_buffer`` of shape ``(K, *param_shape)``, whose ``K`` must match the JAX state's.
A JAX entry that is itself stacked on leading axes (AggMo's state in train_jax.py checkpoints
written before its velocities were separate arrays: ``1/trace/fc1/kernel`` of shape
``(K, *param_shape)``) is converted to torch slice by slice.

Optimizer state: each key's ``state`` in ``twinopt.registry`` pairs each JAX state field with
the torch state entry holding the same quantity. Every JAX ``count`` (the optimizer's, an lr
schedule's, Lookahead's) is the number of updates taken: torch's per-param ``step`` (for the
optimizers that keep one), Lookahead's ``step``, or the ``step`` given. A key's ``group_state``
(AdaBound's ``base_lr``) is kept in torch's param groups. A torch state without per-param entries
(no step taken yet) is a fresh state. Every mismatch (another optimizer, another model, a missing entry) raises
:class:`ConversionError` naming the entry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np

from . import registry

_TORCH_PARAM = re.compile(r"(conv|fc)(\d+)\.(weight|bias)")
_JAX_KIND = {"weight": "kernel", "bias": "bias"}

class ConversionError(ValueError):
    """What cannot be converted: the message names the entry, the reason and the fix."""


def as_array(value) -> np.ndarray:
    """A NumPy array of ``value``: an array, a tensor (by duck typing, without importing torch) or a number."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class Layout:
    """A model's parameters: torch names in ``model.parameters()`` order, torch shapes, and the
    ``(C, H, W)`` of the CNN's feature map that fc1 reads (None for the MLP)."""

    def __init__(self, torch_shapes: Mapping[str, tuple]):
        self.shapes = {name: tuple(shape) for name, shape in torch_shapes.items()}
        for name in self.shapes:
            if not _TORCH_PARAM.fullmatch(name):
                raise ConversionError(f"{name}: not a parameter of the MLP or the CNN (conv<i>/fc<i> .weight/.bias)")
        convs = [shape for name, shape in self.shapes.items() if name.startswith("conv") and name.endswith("weight")]
        self.chw = None
        if convs and "fc1.weight" in self.shapes:
            channels = convs[-1][0]
            hw, rest = divmod(self.shapes["fc1.weight"][1], channels)
            side = math.isqrt(hw)
            if rest or side * side != hw:
                raise ConversionError(f"fc1.weight {self.shapes['fc1.weight']}: its inputs are not a square map "
                                      f"of {channels} channels")
            self.chw = (channels, side, side)

    @classmethod
    def from_jax(cls, flat_params: Mapping[str, np.ndarray]) -> Layout:
        """The layout of JAX weights ``{"fc1/kernel": ..., "fc1/bias": ...}`` (any order)."""
        found = []
        for path, value in flat_params.items():
            match = re.fullmatch(r"(conv|fc)(\d+)/(kernel|bias)", path)
            if not match:
                raise ConversionError(f"{path}: not a parameter of the MLP or the CNN (conv<i>/fc<i> kernel/bias)")
            kind, number, part = match.groups()
            shape = tuple(value.shape if hasattr(value, "shape") else np.shape(value))
            if part == "kernel":
                shape = shape[::-1] if len(shape) == 2 else (shape[3], shape[2], shape[0], shape[1])
            name = f"{kind}{number}.{'weight' if part == 'kernel' else 'bias'}"
            found.append(((kind == "fc", int(number), part == "bias"), name, shape))
        return cls({name: shape for _, name, shape in sorted(found)})

    def jax_name(self, name: str) -> str:
        layer, kind = name.split(".")
        return f"{layer}/{_JAX_KIND[kind]}"

    def torch_name(self, path: str) -> str | None:
        """``fc1/kernel`` -> ``fc1.weight``; None if the path is no param of this model."""
        layer, _, kind = path.rpartition("/")
        name = f"{layer}.{'weight' if kind == 'kernel' else 'bias'}"
        return name if kind in ("kernel", "bias") and name in self.shapes else None

    def jax_shape(self, name: str) -> tuple:
        shape = self.shapes[name]
        if name.endswith("bias"):
            return shape
        return shape[::-1] if len(shape) == 2 else (shape[2], shape[3], shape[1], shape[0])

    def _one_to_torch(self, name, value):
        if name.endswith("bias"):
            return value
        if value.ndim == 4:  # (kh, kw, in, out) -> (out, in, kh, kw)
            return value.transpose(3, 2, 0, 1)
        if name == "fc1.weight" and self.chw is not None and value.shape[0] == math.prod(self.chw):
            c, h, w = self.chw  # rows (H, W, C) -> (C, H, W); a mean over them (size 1) stays
            value = value.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
        return value.T

    def _one_from_torch(self, name, value):
        if name.endswith("bias"):
            return value
        if value.ndim == 4:  # (out, in, kh, kw) -> (kh, kw, in, out)
            return value.transpose(2, 3, 1, 0)
        value = value.T
        if name == "fc1.weight" and self.chw is not None and value.shape[0] == math.prod(self.chw):
            c, h, w = self.chw  # rows (C, H, W) -> (H, W, C); a mean over them (size 1) stays
            value = value.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
        return value

    def _convert(self, name, value, what, source_shape, one):
        """``value`` of param ``name``: its shape (after any leading axes), or its shape with some
        axes of size 1 (a mean over them: Adafactor's row and column factors), which the same
        transposes move."""
        value = as_array(value)
        lead, shape = value.shape[: value.ndim - len(source_shape)], value.shape[value.ndim - len(source_shape):]
        if value.ndim < len(source_shape) or any(n not in (full, 1) for n, full in zip(shape, source_shape)):
            raise ConversionError(f"{what}: expected {source_shape} (after any leading axes), got "
                                  f"{value.shape}: a state of another model size?")
        slices = [one(name, x) for x in value.reshape((-1, *shape))]
        return np.ascontiguousarray(np.stack(slices).reshape(lead + slices[0].shape))

    def to_torch(self, name: str, value, what=None) -> np.ndarray:
        """The JAX-layout ``value`` of param ``name`` (optionally with leading axes) in torch layout."""
        return self._convert(name, value, what or name, self.jax_shape(name), self._one_to_torch)

    def from_torch(self, name: str, value, what=None) -> np.ndarray:
        """The torch-layout ``value`` of param ``name`` (optionally with leading axes) in JAX layout."""
        return self._convert(name, value, what or name, self.shapes[name], self._one_from_torch)


def weights_to_torch(flat_params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """JAX weights ``{"fc1/kernel": ...}`` as a torch model ``state_dict`` (torch names and order)."""
    layout = Layout.from_jax(flat_params)
    return {name: layout.to_torch(name, flat_params[layout.jax_name(name)]) for name in layout.shapes}


def weights_from_torch(state_dict: Mapping, layout: Layout) -> dict[str, np.ndarray]:
    """A torch model ``state_dict`` (arrays or tensors) as JAX weights of the model ``layout``.

    Missing or unexpected keys and other shapes raise :class:`ConversionError`."""
    missing = [name for name in layout.shapes if name not in state_dict]
    unexpected = [name for name in state_dict if name not in layout.shapes]
    if missing or unexpected:
        raise ConversionError(f"state_dict does not match the model: missing keys {missing}, unexpected keys "
                              f"{unexpected}")
    out = {}
    for name, expected in layout.shapes.items():
        value = as_array(state_dict[name])
        if value.shape != expected:
            raise ConversionError(f"{name}: expected {expected}, got {value.shape}: a state_dict of another "
                                  "model size?")
        out[layout.jax_name(name)] = layout.from_torch(name, value)
    return out


class _Entry:
    """One entry of a flat JAX optimizer state: ``field`` of param ``param`` (None: a scalar), and
    ``index``, the entry's number where the field keeps several arrays per param
    (``1/trace/2/fc1/kernel``: field ``trace``, index 2), else None."""

    def __init__(self, path, parts, layout):
        self.path, self.param, self.index = path, None, None
        if len(parts) >= 3:
            self.param = layout.torch_name("/".join(parts[-2:]))
            if self.param is None and parts[-1] in ("kernel", "bias"):
                raise ConversionError(f"optimizer state entry {path}: the model has no param {parts[-2]}.{parts[-1]}")
        if self.param and len(parts) >= 4 and parts[-3].isdigit():
            self.field, self.index = parts[-4], int(parts[-3])
        else:
            self.field = parts[-3] if self.param else parts[-1]


def _stacked_entries(entries):
    """``{(field, param): [entries in index order]}`` of the numbered entries; the indices of each
    must be 0, 1, ..., K - 1."""
    stacks = {}
    for e in entries:
        if e.index is not None:
            stacks.setdefault((e.field, e.param), []).append(e)
    for stack in stacks.values():
        stack.sort(key=lambda e: e.index)
        if [e.index for e in stack] != list(range(len(stack))):
            raise ConversionError(f"optimizer state entries {[e.path for e in stack]}: numbered "
                                  f"{[e.index for e in stack]}, not 0 to {len(stack) - 1}")
    return stacks


def _parse(flat_state, layout):
    """Split a flat JAX state into (inner entries, slow-weight entries, Lookahead count entry)."""
    lookahead = any(path.split("/")[0] in ("inner_state", "slow") for path in flat_state)
    inner, slow, counter = [], [], None
    for path in flat_state:
        parts = path.split("/")
        if not lookahead:
            inner.append(_Entry(path, parts, layout))
        elif parts[0] == "inner_state":
            inner.append(_Entry(path, parts[1:], layout))
        elif parts[0] == "slow":
            slow.append(_Entry(path, ["slow", *parts[1:]], layout))
        elif path == "count":
            counter = path
        else:
            raise ConversionError(f"optimizer state entry {path}: not part of a jax_opt.lookahead state")
    return lookahead, inner, slow, counter


def _info(key) -> registry.OptimizerInfo:
    try:
        return registry.info(key)
    except ValueError as err:
        raise ConversionError(str(err)) from None


def _param_ids(state_dict, layout):
    """The torch param indices in param-group order, paired with the model's param names."""
    ids = [i for group in state_dict["param_groups"] for i in group["params"]]
    if len(ids) != len(layout.shapes):
        raise ConversionError(f"the torch optimizer has {len(ids)} params, the model {len(layout.shapes)}: "
                              "build it with model.parameters()")
    return dict(zip(ids, layout.shapes))


def _check_lookahead(jax_lookahead, torch_state_dict):
    torch_lookahead = "lookahead" in torch_state_dict
    if jax_lookahead != torch_lookahead:
        with_, without = ("JAX", "torch") if jax_lookahead else ("torch", "JAX")
        raise ConversionError(f"the {with_} optimizer is wrapped in Lookahead and the {without} one is not: "
                              "wrap both or neither")


def optimizer_state_to_torch(flat_state: Mapping[str, np.ndarray], template: Mapping, key: str,
                             layout: Layout) -> dict:
    """A flat JAX optimizer state of optimizer ``key`` as a torch optimizer ``state_dict``.

    ``template``: the torch optimizer's own ``state_dict()`` (its param groups and
    hyperparameters are kept; only the state and the counters come from JAX). Arrays are NumPy
    (``torch_train.checkpoints.to_tensors`` makes tensors of them).
    """
    info = _info(key)
    lookahead, inner, slow, counter = _parse(flat_state, layout)
    _check_lookahead(lookahead, template)
    names = _param_ids(template, layout)
    fields = info.state
    counts = {e.path: int(as_array(flat_state[e.path])) for e in inner if e.field == "count" and e.param is None}
    if counter:
        counts[counter] = int(as_array(flat_state[counter]))
    if len(set(counts.values())) > 1:
        raise ConversionError(f"the JAX state's counts differ ({counts}): each must be the number of updates taken")
    step = next(iter(counts.values()), None)
    per_param = {name: {} for name in layout.shapes}
    groups = [dict(group) for group in template["param_groups"]]
    dtype = np.float32
    stacks, source = _stacked_entries(inner), {}
    for e in inner:
        if e.field == "count" and e.param is None:
            continue
        group_field = e.field in info.group_state
        if e.field not in fields and not group_field:
            raise ConversionError(f"optimizer state entry {e.path}: {key} keeps no {e.field!r}: a state of "
                                  "another optimizer?")
        if e.index not in (None, 0):  # converted with entry 0 of its stack
            continue
        value = as_array(flat_state[e.path])
        if e.param is not None:
            target = (e.param, fields[e.field])
            if target in source:
                raise ConversionError(f"optimizer state entries {source[target]} and {e.path} are both "
                                      f"{e.param}'s {fields[e.field]!r}: a state mixing two layouts?")
            source[target] = e.path
            if e.index is None:
                per_param[e.param][fields[e.field]] = layout.to_torch(e.param, value, e.path)
            else:  # the numbered entries stacked on a new leading axis
                stack = stacks[e.field, e.param]
                per_param[e.param][fields[e.field]] = np.stack(
                    [layout.to_torch(e.param, as_array(flat_state[s.path]), s.path) for s in stack])
            dtype = np.promote_types(dtype, value.dtype)
        elif group_field:
            for group in groups:
                group[e.field] = float(value)
        else:
            for state in per_param.values():
                state[fields[e.field]] = value.copy()
    if info.torch_step and step is not None:
        for state in per_param.values():  # torch keeps steps in the default dtype, set like the params'
            state["step"] = np.array(step, dtype=dtype)
    fresh = step == 0  # torch builds its state at the first step: none before it
    out = {**template, "param_groups": groups}
    inner_states = {} if fresh else {i: per_param[name] for i, name in names.items() if per_param[name]}
    if not lookahead:
        out["state"] = inner_states
        return out
    slow_weights = {e.param: layout.to_torch(e.param, flat_state[e.path], e.path) for e in slow}
    out["state"] = {} if fresh else {i: {"slow_param": slow_weights[name]} for i, name in names.items()}
    out["inner_state"] = inner_states
    out["lookahead"] = {**template["lookahead"], "step": step}
    return out


def _torch_step(states, names, keeps_state, lookahead_step, step):
    """The number of updates a torch state has taken, from its per-param steps, its emptiness
    (where the optimizer keeps a state), Lookahead's counter or ``step``, checked against each
    other; None if nothing tells."""
    found = {}
    if states and len(states) != len(names):
        idle = [name for i, name in names.items() if i not in states]
        raise ConversionError(f"params {idle} have no optimizer state while others have: a JAX state needs "
                              "every param to have taken the same steps")
    if not states and keeps_state:
        found["the empty state"] = 0
    steps = {int(as_array(s["step"])) for s in states.values() if "step" in s}
    if len(steps) > 1:
        raise ConversionError(f"the params' steps differ ({sorted(steps)}): a JAX state has one count")
    if steps:
        found["the params' step"] = steps.pop()
    if lookahead_step is not None:
        found["Lookahead's step"] = lookahead_step
    if step is not None:
        found["step"] = step
    if len(set(found.values())) > 1:
        raise ConversionError(f"the step counts differ: {found}")
    return next(iter(found.values()), None)


def optimizer_state_from_torch(state_dict: Mapping, flat_template: Mapping[str, np.ndarray], key: str,
                               layout: Layout, step: int | None = None) -> dict[str, np.ndarray]:
    """A torch optimizer ``state_dict`` of optimizer ``key`` as a flat JAX state shaped like
    ``flat_template`` (the JAX optimizer's fresh state, flat).

    ``step``: the number of updates taken, needed only where the torch state does not record it
    (SGD with momentum and AggMo keep no step count, unless wrapped in Lookahead) and the JAX
    state has a count (SGD's momentum, a schedule). Each value is cast to the template's dtype.
    """
    info = _info(key)
    lookahead, inner, slow, counter = _parse(flat_template, layout)
    _check_lookahead(lookahead, state_dict)
    names = _param_ids(state_dict, layout)
    fields = info.state
    states = {int(i): dict(s) for i, s in state_dict["inner_state" if lookahead else "state"].items() if s}
    for i, state in states.items():
        if i not in names:
            raise ConversionError(f"the torch state has param index {i}, the optimizer's groups only {sorted(names)}")
        allowed = {*fields.values(), *(("step",) if info.torch_step else ())}
        extra = sorted(set(state) - allowed)
        if extra:
            raise ConversionError(f"param {i} ({names[i]}) has state {extra}, which {key} does not keep: a "
                                  "state_dict of another optimizer?")
    la_step = int(state_dict["lookahead"]["step"]) if lookahead else None
    keeps_state = any(e.param is not None for e in inner)
    step = _torch_step(states, names, keeps_state, la_step, step)
    by_name = {names[i]: state for i, state in states.items()}
    stacks = _stacked_entries(inner)
    out, used = {}, set()

    def put(path, value):
        want = np.asarray(flat_template[path])
        value = as_array(value)
        if value.shape != want.shape:
            raise ConversionError(f"optimizer state entry {path}: expected shape {want.shape}, got {value.shape}")
        out[path] = value.astype(want.dtype)

    for e in inner:
        if e.field == "count" and e.param is None:
            if step is None:
                raise ConversionError(f"the torch state of {key} does not record the number of steps, which the "
                                      f"JAX state keeps in {e.path}: pass step=")
            put(e.path, step)
        elif e.field in info.group_state:
            values = {group[e.field] for group in state_dict["param_groups"] if e.field in group}
            if len(values) > 1:
                raise ConversionError(f"the param groups' {e.field} differ ({sorted(values)}): the JAX state has one")
            put(e.path, values.pop() if values else flat_template[e.path])
        elif e.field not in fields:
            raise ConversionError(f"optimizer state entry {e.path}: {key} keeps no {e.field!r}: is the JAX "
                                  f"optimizer {key}?")
        elif not states:  # no step taken: the fresh state
            put(e.path, flat_template[e.path])
        elif e.param is None:  # one scalar in JAX, the same value in every torch param
            values = {float(as_array(s[fields[e.field]])) for s in states.values() if fields[e.field] in s}
            if len(values) != 1:
                raise ConversionError(f"the params' {fields[e.field]} must be one value for {e.path}, got {values}")
            put(e.path, values.pop())
            used.add(fields[e.field])
        else:
            state = by_name[e.param]
            if fields[e.field] not in state:
                raise ConversionError(f"param {e.param} has no {fields[e.field]!r}, which the JAX state needs for "
                                      f"{e.path}: another setting of {key} (amsgrad, momentum, centered)?")
            value = as_array(state[fields[e.field]])
            if e.index is not None:  # entry e.index of the torch entry's leading axis
                count, shape = len(stacks[e.field, e.param]), layout.shapes[e.param]
                if value.ndim != len(shape) + 1 or value.shape[0] != count:
                    raise ConversionError(f"optimizer state entry {e.path} ({e.param}): the JAX state keeps "
                                          f"{count} {e.field!r} arrays per param, so {fields[e.field]!r} must have "
                                          f"shape ({count}, ...), got {value.shape}: another number of betas?")
                value = value[e.index]
            put(e.path, layout.from_torch(e.param, value, f"{e.path} ({e.param})"))
            used.add(fields[e.field])
    unused = sorted({name for s in states.values() for name in s} - used - {"step"})
    if unused:
        raise ConversionError(f"the torch state has {unused}, which this JAX optimizer does not keep: another "
                              f"setting of {key} (amsgrad, momentum, centered)?")
    slow_states = {int(i): s for i, s in state_dict["state"].items()} if lookahead else {}
    for e in slow:
        state = slow_states.get(next(i for i, n in names.items() if n == e.param), {})
        put(e.path, layout.from_torch(e.param, state["slow_param"], e.path) if "slow_param" in state
            else flat_template[e.path])
    if counter:
        put(counter, step if step is not None else flat_template[counter])
    return {path: out[path] for path in flat_template}
