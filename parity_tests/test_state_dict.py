"""Stop after k steps, save, load into a fresh optimizer, continue: the trajectory equals an
uninterrupted run bit for bit (torch: ``state_dict`` through ``torch.save``/``torch.load``
with ``weights_only=True``; JAX: the state's leaves through ``np.savez`` and back)."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_opt
from jax_opt import lookahead as jax_lookahead
from torch_opt import Lookahead

from . import harness as h

STOP = 37  # not a multiple of Lookahead's k, so a resume lands mid-period


def torch_make(key, lookahead):
    def make(groups):
        opt = torch_opt.OPTIMIZERS[key](groups)
        return Lookahead(opt, k=5, alpha=0.6) if lookahead else opt
    return make


def torch_roundtrip(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("lookahead", [False, True], ids=["plain", "lookahead"])
@pytest.mark.parametrize("case", list(h.CASES))
def test_torch_resume_is_exact(case, lookahead):
    key, group_kwargs = h.case_kwargs(case, 0.05)
    params, grads = h.make_problem()
    with h.torch_default_dtype(np.float64):
        full = h.trajectory(h.TorchStepper(torch_make(key, lookahead), params, group_kwargs), grads)
        first = h.TorchStepper(torch_make(key, lookahead), params, group_kwargs)
        h.trajectory(first, grads[:STOP])
        saved = torch_roundtrip(first.opt.state_dict())
        # A fresh optimizer built with other hyperparameters: load_state_dict must restore them.
        second = h.TorchStepper(torch_make(key, lookahead), [[a * 0 for a in g] for g in params],
                                [{**kw, "lr": 123.0} for kw in group_kwargs])
        second.set_params(first.params())
        second.opt.load_state_dict(saved)
        resumed = h.trajectory(second, grads[STOP:])
    for a, b in zip(full[STOP:], resumed):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def jax_roundtrip(state, like):
    """Leaves to an npz file in memory and back into the structure of ``like``."""
    buf = io.BytesIO()
    np.savez(buf, *[np.asarray(x) for x in jax.tree_util.tree_leaves(state)])
    buf.seek(0)
    with np.load(buf) as data:
        leaves = [jnp.asarray(data[f"arr_{i}"]) for i in range(len(data.files))]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves)


@pytest.mark.parametrize("lookahead", [False, True], ids=["plain", "lookahead"])
@pytest.mark.parametrize("case", list(h.CASES))
def test_jax_resume_is_exact(case, lookahead):
    key, group_kwargs = h.case_kwargs(case, 0.05)
    params, grads = h.make_problem()
    tx = h.jax_transform(key, group_kwargs)
    if lookahead:
        tx = jax_lookahead(tx, 5, 0.6)
    full = h.trajectory(h.JaxStepper(tx, params), grads)
    first = h.JaxStepper(tx, params)
    h.trajectory(first, grads[:STOP])
    second = h.JaxStepper(tx, [[a * 0 for a in g] for g in params])
    second.tree = jax.tree_util.tree_map(jnp.asarray, first.tree)
    second.state = jax_roundtrip(first.state, second.state)
    resumed = h.trajectory(second, grads[STOP:])
    for a, b in zip(full[STOP:], resumed):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_state_dicts_carry_what_resume_needs():
    p = torch.nn.Parameter(torch.ones(3))
    opt = Lookahead(torch_opt.AdaBound([p], lr=0.01), k=3, alpha=0.5)
    p.grad = torch.ones(3)
    for _ in range(4):
        opt.step()
    sd = opt.state_dict()
    assert sd["lookahead"] == {"k": 3, "alpha": 0.5, "step": 4}
    assert set(sd["state"][0]) == {"slow_param"}
    assert sd["inner_state"][0]["step"].item() == 4
    assert sd["param_groups"][0]["base_lr"] == 0.01
