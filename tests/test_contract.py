"""The generic contract of every optimizer, one table per framework (torch's ``optim_db``, optax's
optimizers-under-test list): every key on every path, small cases. What torch.optim promises for
any optimizer (copies, hooks, deferred initialization, low-precision dtypes) and what optax
promises for any transformation (extra update arguments, ``inject_hyperparams``, dtypes, a state
whose structure and dtypes a jitted step carries). The update rules themselves are
``parity_tests``'; complex params ``parity_tests/test_complex.py``; older state dicts and tensor
hyperparameters ``tests/test_torch_api.py``."""

import copy
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import jax_opt
import torch_opt
from torch_train.benchmarks import step_paths
from twinopt.registry import KEYS

# Every torch_opt class on each of its paths (per-tensor, foreach, fused where it has it).
torch_cases = pytest.mark.parametrize(("key", "path"), [
    pytest.param(key, path, id=f"{key}-{name}")
    for key in KEYS for name, path in step_paths(torch_opt.OPTIMIZERS[key]).items()])


def torch_model(device=None, dtype=torch.float32):
    with torch.device(device or "cpu"):
        return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).to(dtype)


def fill(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))


def grad_values(numel, step, scale=1.0):
    """Gradients of magnitude 0.5 to 1 (times ``scale``), alternating in sign, varied by step;
    never 0: in float16 a zero gradient makes Adam's ``0 / (0 + eps)`` a NaN, eps 1e-8 rounding
    to 0 (in torch.optim and optax alike; issue 20's master weights are the remedy)."""
    signs = np.where(np.arange(numel) % 2 == 0, 1.0, -1.0)
    return (0.5 + 0.5 * np.linspace(0.0, 1.0, numel)) * signs * scale * (1 + 0.1 * step)


def set_grads(params, step):
    for i, p in enumerate(params):
        p.grad = torch.from_numpy(grad_values(p.numel(), step, 0.3 + 0.1 * i)).view_as(p).to(p.dtype)


def run_steps(opt, params, steps, first=0):
    for i in range(first, first + steps):
        set_grads(params, i)
        opt.step()


def make(key, params, path):
    return torch_opt.OPTIMIZERS[key](params, lr=1e-2, **path)


@torch_cases
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_torch_copy_continues_as_the_original(key, path, how):
    """``copy.deepcopy`` and pickle of an optimizer that has stepped (with its params, as a
    training state is copied): the copy, stepped on its own params, follows the original bit for bit."""
    model = torch_model()
    fill(model)
    params = list(model.parameters())
    opt = make(key, params, path)
    run_steps(opt, params, 3)
    params2, opt2 = copy.deepcopy((params, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((params, opt)))
    assert opt2.param_groups[0]["params"][0] is params2[0]
    run_steps(opt, params, 3, first=3)
    run_steps(opt2, params2, 3, first=3)
    for a, b in zip(params, params2):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


@torch_cases
def test_torch_step_hooks_fire_once_per_step(key, path):
    """The optimizer's own and torch.optim's global step hooks, pre and post, each once a step,
    in torch.optim's order."""
    model = torch_model()
    params = list(model.parameters())
    opt = make(key, params, path)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    handles = [register_optimizer_step_pre_hook(lambda o, args, kwargs: calls.append("global pre")),
               register_optimizer_step_post_hook(lambda o, args, kwargs: calls.append("global post"))]
    try:
        run_steps(opt, params, 2)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["global pre", "pre", "post", "global post"] * 2


@torch_cases
def test_torch_deferred_initialization(key, path, monkeypatch):
    """The ``to_empty()`` workflow: the optimizer built on a model on the meta device, the model
    then materialized in place (``swap_module_params_on_conversion``, without which ``to_empty``
    makes new Parameters that no optimizer holds, torch.optim's included) and initialized, steps
    as one built on the initialized model."""
    monkeypatch.setattr(torch.__future__, "_swap_module_params_on_conversion", True)
    deferred = torch_model(device="meta")
    opt = make(key, list(deferred.parameters()), path)
    deferred.to_empty(device="cpu")
    fill(deferred)
    direct = torch_model()
    fill(direct)
    reference = make(key, list(direct.parameters()), path)
    run_steps(opt, list(deferred.parameters()), 3)
    run_steps(reference, list(direct.parameters()), 3)
    for a, b in zip(deferred.parameters(), direct.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@torch_cases
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_torch_low_precision_keeps_its_dtypes(key, path, dtype):
    """bf16 and f16 params stay in their dtype, and every param-shaped state tensor is kept in
    the param's dtype (torch.optim's rule); step counts stay float32. The values are finite."""
    model = torch_model(dtype=dtype)
    fill(model)
    params = list(model.parameters())
    opt = make(key, params, path)
    run_steps(opt, params, 3)
    before = {id(p): {k: (v.dtype, v.shape) for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in params}
    run_steps(opt, params, 1, first=3)
    for p in params:
        assert p.dtype == dtype and torch.isfinite(p).all()
        tensors = {k: v for k, v in opt.state[p].items() if torch.is_tensor(v)}
        assert {k: (v.dtype, v.shape) for k, v in tensors.items()} == before[id(p)]  # stable from step to step
        for name, value in tensors.items():
            if value.shape == p.shape:
                assert value.dtype == p.dtype, name
            elif name == "step":
                assert value.dtype == torch.float32, name


# JAX: every key's factory with its defaults.
jax_keys = pytest.mark.parametrize("key", KEYS)


def jax_params(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.standard_normal((4, 3)), dtype), "b": jnp.asarray(rng.standard_normal(3), dtype)}


def jax_grads(params, step):
    return jax.tree.map(lambda p: jnp.asarray(grad_values(p.size, step).reshape(p.shape), p.dtype), params)


def jax_steps(tx, params, steps, **extra):
    state = tx.init(params)
    for i in range(steps):
        updates, state = tx.update(jax_grads(params, i), state, params, **extra)
        params = optax.apply_updates(params, updates)
    return params, state


@jax_keys
def test_jax_update_takes_extra_arguments(key):
    """As every optax optimizer (``GradientTransformationExtraArgs``): ``update(..., value=loss)``
    is accepted and changes nothing; alone and inside ``jax_opt.lookahead``."""
    for tx in (jax_opt.OPTIMIZERS[key](), jax_opt.lookahead(jax_opt.OPTIMIZERS[key](), sync_period=2)):
        plain, _ = jax_steps(tx, jax_params(), 3)
        extra, _ = jax_steps(tx, jax_params(), 3, value=jnp.float32(1.5), grad=None)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), plain, extra)


@jax_keys
def test_jax_inject_hyperparams_keeps_the_plain_state_layout(key):
    """``optax.inject_hyperparams(factory)()`` turns every numeric default into an array; its inner
    state has the plain ``factory()``'s structure, shapes and dtypes (a checkpoint of one loads
    into the other), and the two take the same steps."""
    params = jax_params()
    factory = jax_opt.OPTIMIZERS[key]
    plain_params, plain = jax_steps(factory(), params, 3)
    injected_params, injected = jax_steps(optax.inject_hyperparams(factory)(), params, 3)
    assert jax.tree.structure(injected.inner_state) == jax.tree.structure(plain)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), injected.inner_state) == jax.tree.map(
        lambda x: (x.shape, x.dtype), plain)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), injected_params, plain_params)


@jax_keys
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "f16"])
def test_jax_low_precision_keeps_its_dtypes(key, dtype):
    """Updates of bf16 and f16 params have the params' dtype (``apply_updates`` keeps it), and a
    step leaves the state's structure, shapes and dtypes as ``init`` made them, so a jitted step
    carries it; the values are finite."""
    params = jax_params(dtype)
    tx = jax_opt.OPTIMIZERS[key]()
    state = tx.init(params)
    layout = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    step = jax.jit(tx.update)
    for i in range(3):
        updates, state = step(jax_grads(params, i), state, params)
        assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(lambda p: p.dtype, params)
        assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == layout
        params = optax.apply_updates(params, updates)
    assert all(bool(jnp.isfinite(p.astype(jnp.float32)).all()) for p in jax.tree.leaves(params))
