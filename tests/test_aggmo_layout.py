"""jax_opt.aggmo keeps its K velocities as K trees (flat names ``1/trace/<i>/fc1/kernel``); before,
one stacked ``(K, *param_shape)`` array per param (``1/trace/fc1/kernel``). Runs saved in the
stacked layout still resume, in train_jax.py exactly and in train_torch.py as from a new one, and
torch's stacked ``momentum_buffer`` converts to and from the K trees, naming what does not fit."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from flax import nnx
from script_helpers import SCRIPTS, argv, assert_same_run, records

import jax
import jax.numpy as jnp
import jax_opt
import torch_opt
from jax_train import checkpoints as jconvert
from jax_train import models as jm
from torch_train import models as tm
from twinopt import convert, runs

# Default betas (K = 3): a run with -betas does not resume at all yet (its checkpoints' fingerprint
# holds the betas as a list, the resumed run's as a tuple); other K are covered by the API tests below.
CASES = {
    "aggmo": ("-optimizer", "aggmo"),
    "aggmo+lookahead": ("-optimizer", "aggmo", "-lookahead", "-lookahead_k", "3"),
}
# 3 epochs of 4 steps in float64, stopped after step 6 (mid-epoch 2).
COMMON = ("-num_epochs", "3", "-dtype", "float64")
VELOCITY = re.compile(r"(opt_state/(?:.*/)?trace)/(\d+)/(.*)")


def stacked(names_values):
    """The entries in the old layout and order: each param's velocities ``.../trace/<i>/<param>``
    stacked into ``.../trace/<param>`` (i = 0..K-1) where velocity 0 was; the rest as they are."""
    out, stacks = {}, {}
    for name, value in names_values:
        match = VELOCITY.fullmatch(name)
        if not match:
            out[name] = value
            continue
        old = f"{match[1]}/{match[3]}"
        if old not in stacks:
            stacks[old], out[old] = [], None
        assert int(match[2]) == len(stacks[old])
        stacks[old].append(value)
    return {name: np.stack(stacks[name]) if value is None else value for name, value in out.items()}


def stacked_flat(flat):
    """A flat optimizer state (names without ``opt_state/``) in the old stacked layout."""
    old = stacked((f"opt_state/{n}", v) for n, v in flat.items())
    return {n.removeprefix("opt_state/"): v for n, v in old.items()}


def to_old_layout(run, named=True):
    """Rewrite every train_jax.py checkpoint of ``run`` as a train_jax.py of before wrote it: stacked
    AggMo velocities, named (``opt_state/1/trace/fc1/kernel``) or, if not ``named``, unnamed
    (``arr_<i>`` in leaf order, params first, with ``num_leaves`` in the meta)."""
    paths = sorted((run / "checkpoints").glob("*.npz"))
    assert paths
    for path in paths:
        with np.load(path) as ckpt:
            meta = json.loads(str(ckpt["meta"]))
            assert any(VELOCITY.fullmatch(n) for n in ckpt.files)
            arrays = stacked((n, ckpt[n]) for n in ckpt.files if n != "meta")
        old = [n for n in arrays if "/trace/" in n]
        assert old and all(arrays[n].shape[0] == 3 for n in old)
        if named:
            np.savez(path, **arrays, meta=np.array(json.dumps(meta)))
        else:
            order = [n for n in arrays if n.startswith("params/")] + [n for n in arrays if n.startswith("opt_state/")]
            meta["num_leaves"] = len(order)
            np.savez(path, *(arrays[n] for n in order), meta=np.array(json.dumps(meta)))


def stopped_run(data_dir, run, flags, monkeypatch, step=6):
    monkeypatch.setenv(runs.FAULT_ENV, f"sigterm@{step}")
    with pytest.raises(SystemExit):
        SCRIPTS["jax"].main(argv(data_dir, run, *flags))
    monkeypatch.delenv(runs.FAULT_ENV)


def resume(backend, run, data_dir):
    SCRIPTS[backend].main(["-out_dir", str(run), "-resume", "-no_progress", "-data_dir", str(data_dir)])


def losses(run):
    return np.array([r["loss"] for r in records(run) if "loss" in r])


@pytest.mark.parametrize("case", CASES)
def test_stacked_checkpoint_resumes_in_both_scripts(case, data_dir, tmp_path, monkeypatch):
    """train_jax.py resumes an old-layout checkpoint bit for bit as the uninterrupted run;
    train_torch.py resumes it as it resumes the same checkpoint in the new layout (bit for bit),
    and both follow the uninterrupted JAX run (float64, 1e-9)."""
    flags = (*CASES[case], *COMMON)
    straight, run = tmp_path / "straight", tmp_path / "run"
    SCRIPTS["jax"].main(argv(data_dir, straight, *flags))
    stopped_run(data_dir, run, flags, monkeypatch)
    new_copy = tmp_path / "new_copy"
    shutil.copytree(run, new_copy)
    to_old_layout(run)
    old_copy = tmp_path / "old_copy"
    shutil.copytree(run, old_copy)
    resume("jax", run, data_dir)
    assert_same_run(run, straight, "jax")
    resume("torch", old_copy, data_dir)
    resume("torch", new_copy, data_dir)
    assert_same_run(old_copy, new_copy, "torch")
    want = losses(straight)
    assert len(want) == 12 and np.max(np.abs(losses(old_copy) - want) / np.abs(want)) <= 1e-9


def test_unnamed_stacked_checkpoint_resumes_in_jax(data_dir, tmp_path, monkeypatch):
    """A checkpoint from before the arrays were named (so also stacked) resumes exactly."""
    flags = (*CASES["aggmo+lookahead"], *COMMON)
    straight, run = tmp_path / "straight", tmp_path / "run"
    SCRIPTS["jax"].main(argv(data_dir, straight, *flags))
    stopped_run(data_dir, run, flags, monkeypatch)
    to_old_layout(run, named=False)
    resume("jax", run, data_dir)
    assert_same_run(run, straight, "jax")


MNIST = {"hidden": (6, 5)}


def jax_state(betas, lookahead=False, steps=2):
    """(params, the aggmo state after ``steps`` updates) on the tiny MLP (float32)."""
    params = nnx.state(jm.build_model("mnist", 0, jnp.float32, **MNIST), nnx.Param)
    tx = jax_opt.aggmo(0.1, betas)
    tx = jax_opt.lookahead(tx, 2) if lookahead else tx
    state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)
    for _ in range(steps):
        _, state = tx.update(grads, state, params)
    return params, state


def torch_template(betas, lookahead=False):
    model = tm.build_model("mnist", 0, torch.float32, **MNIST)
    opt = torch_opt.AggMo(model.parameters(), betas=betas)
    return model, torch_opt.Lookahead(opt, k=2) if lookahead else opt


@pytest.mark.parametrize("lookahead", [False, True])
def test_velocities_are_torchs_stacked_buffer(lookahead):
    """The K trees are torch's (K, *param_shape) momentum_buffer, in index order, and back exactly;
    a flat state in the old stacked layout converts to the same torch state."""
    betas = (0.0, 0.5, 0.9, 0.99)
    params, state = jax_state(betas, lookahead)
    _, opt = torch_template(betas, lookahead)
    flat = jconvert.flatten(state)
    prefix = "inner_state/1" if lookahead else "1"
    velocities = [n for n in flat if n.endswith("/fc2/bias") and "/trace/" in n]
    assert velocities == [f"{prefix}/trace/{i}/fc2/bias" for i in range(4)]
    converted = jconvert.opt_state_to_torch(params, state, opt.state_dict(), "aggmo")
    inner = converted["inner_state" if lookahead else "state"]
    fc1 = inner[0]["momentum_buffer"]  # fc1.weight, (out, in) in torch
    assert fc1.shape == (4, 6, 784)
    for i in range(4):
        np.testing.assert_array_equal(fc1[i], flat[f"{prefix}/trace/{i}/fc1/kernel"].T)
    old = stacked_flat(flat)
    assert f"{prefix}/trace/fc1/kernel" in old and old[f"{prefix}/trace/fc1/kernel"].shape == (4, 784, 6)
    from_old = convert.optimizer_state_to_torch(old, opt.state_dict(), "aggmo", jconvert.layout(params))
    np.testing.assert_array_equal(from_old["inner_state" if lookahead else "state"][0]["momentum_buffer"], fc1)
    back = jconvert.opt_state_from_torch(params, jax_state(betas, lookahead, 0)[1], converted, "aggmo", step=2)
    for name, value in jconvert.flatten(back).items():
        np.testing.assert_array_equal(value, flat[name], err_msg=name)
    split = jconvert.split_stacked(old, state)
    assert sorted(split) == sorted(flat)
    for name, value in split.items():
        np.testing.assert_array_equal(value, flat[name], err_msg=name)


def test_another_number_of_velocities_is_named():
    params, state = jax_state((0.0, 0.9, 0.99))
    model, opt = torch_template((0.0, 0.9))
    x = torch.zeros(2, 28, 28, 1, dtype=torch.float32)
    model(x).sum().backward()
    opt.step()
    with pytest.raises(convert.ConversionError, match=r"optimizer state entry 1/trace/0/fc1/bias \(fc1.bias\): the "
                                                      r"JAX state keeps 3 'trace' arrays per param, so "
                                                      r"'momentum_buffer' must have shape \(3, \.\.\.\), got \(2, 6\)"):
        jconvert.opt_state_from_torch(params, state, opt.state_dict(), "aggmo", step=1)
    old = stacked_flat(jconvert.flatten(jax_state((0.0, 0.9))[1]))
    with pytest.raises(convert.ConversionError, match=r"1/trace/fc1/bias: 2 stacked velocities \(shape \(2, 6\)\), "
                                                      r"this optimizer keeps 3 \(1/trace/0/fc1/bias, \.\.\.\)"):
        jconvert.split_stacked(old, state)


def test_a_state_in_both_layouts_is_refused():
    params, state = jax_state((0.0, 0.9))
    _, opt = torch_template((0.0, 0.9))
    flat = jconvert.flatten(state)
    mixed = {**flat, "1/trace/fc1/bias": np.stack([flat["1/trace/0/fc1/bias"], flat["1/trace/1/fc1/bias"]])}
    with pytest.raises(convert.ConversionError, match=r"both fc1.bias's 'momentum_buffer'"):
        convert.optimizer_state_to_torch(mixed, opt.state_dict(), "aggmo", jconvert.layout(params))
    gap = {n: v for n, v in flat.items() if "/trace/0/" not in n}
    with pytest.raises(convert.ConversionError, match=r"numbered \[1\], not 0 to 0"):
        convert.optimizer_state_to_torch(gap, opt.state_dict(), "aggmo", jconvert.layout(params))
