"""Complex parameters, every key and path. torch_opt steps them as torch.optim does (the real and
imaginary parts as params of their own, ``torch.view_as_real``); jax_opt as optax does (complex
moments, real squares ``|g|^2``), and ``jax_opt.real_view`` gives torch's behaviour in JAX, so a
complex model trains the same in both backends."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jax_opt
import torch_opt
from twinopt import registry

from . import harness as h
from .test_optax_differences import OPTAX_PEERS, ours_and_theirs

STEPS = 30
# The classes that refuse complex params (``supports_complex = False``: Adafactor, as torch.optim's,
# whose factored moment would average over the real and imaginary parts).
NO_COMPLEX_TORCH = {key for key, info in registry.INFO.items() if not getattr(torch_opt, info.torch).supports_complex}
# optax functions that are not defined on complex params: optax.adadelta squares the gradient as
# g * g (complex), optax.contrib.adopt's clip refuses complex numbers.
NO_COMPLEX_OPTAX = {"adadelta", "contrib.adopt-as-adopt"}


def complex_problem(seed=0):
    """make_problem's shapes and gradient scales, with independent real and imaginary parts."""
    (p_re, g_re), (p_im, g_im) = h.make_problem(seed, steps=STEPS), h.make_problem(seed + 1, steps=STEPS)
    params = [[a + 1j * b for a, b in zip(ga, gb)] for ga, gb in zip(p_re, p_im)]
    grads = [[[a + 1j * b for a, b in zip(ga, gb)] for ga, gb in zip(sa, sb)] for sa, sb in zip(g_re, g_im)]
    return params, grads


def real_views(tree):
    """NumPy's ``view_as_real`` of every array in nested lists."""
    if isinstance(tree, list):
        return [real_views(x) for x in tree]
    return np.stack([tree.real, tree.imag], axis=-1)


def error(traj_a, traj_b):
    return h.max_rel_error(real_views(traj_a), real_views(traj_b))


def default_case(key):
    return h.case_kwargs(registry.case_name(key, ""), 0.0)[1]


PATHS = [(key, path) for key in registry.KEYS for path in ("per-tensor", "foreach", "fused")
         if path != "fused" or h.has_fused(key)]


@pytest.mark.parametrize("key,path", PATHS)
def test_torch_steps_complex_params_as_torch_optim(key, path):
    """torch_opt on complex params: torch.optim's trajectory where torch.optim is the key's
    reference (its per-tensor and foreach paths; its fused kernels refuse complex params, ours
    take them), else the trajectory of the real views stepped as real params; the state stays
    complex (torch.optim's layout)."""
    group_kwargs = default_case(key)
    params, grads = complex_problem()
    make = h.torch_factory(key, "ours", foreach=path == "foreach", fused=path == "fused")
    ours = h.TorchStepper(make, params, group_kwargs)
    if key in NO_COMPLEX_TORCH:
        with pytest.raises(RuntimeError, match="does not support complex parameters"):
            ours.step(grads[0])
        return
    traj = h.trajectory(ours, grads)
    assert all(torch.is_complex(v) for s in ours.opt.state.values() for v in s.values() if torch.is_tensor(v)
               and v.ndim)
    info = registry.INFO[key]
    if info.torch_reference:
        ref = h.TorchStepper(h.torch_factory(key, "torch", foreach=path == "foreach"), params, group_kwargs)
        assert error(traj, h.trajectory(ref, grads)) <= info.tolerance["float64"]
    else:
        ref = h.TorchStepper(make, real_views(params), group_kwargs)
        assert h.max_rel_error(real_views(traj), h.trajectory(ref, real_views(grads))) <= info.tolerance["float64"]


@pytest.mark.parametrize("key", registry.KEYS)
def test_real_view_of_jax_opt_follows_torch_opt_on_complex_params(key):
    """Cross-backend parity on complex params: ``jax_opt.real_view(jax_opt.<key>)`` follows
    torch_opt's trajectory (the per-tensor path)."""
    if key in NO_COMPLEX_TORCH:
        pytest.skip("torch.optim's and torch_opt's Adafactor refuse complex params")
    group_kwargs = default_case(key)
    params, grads = complex_problem()
    with h.torch_default_dtype(np.float64):  # torch's scalar state (NAdam's mu_product, ASGD's eta) in float64
        torch_traj = h.trajectory(h.TorchStepper(h.torch_factory(key), params, group_kwargs), grads)
    jax_traj = h.trajectory(h.JaxStepper(h.jax_transform(key, group_kwargs, wrap=jax_opt.real_view), params), grads)
    assert error(jax_traj, torch_traj) <= registry.INFO[key].tolerance["float64"]


def run_complex(tx, seed=1):
    """The trajectory of a complex vector, a complex matrix and a real matrix."""
    rng = np.random.default_rng(seed)

    def draw(shape, dtype):
        x = rng.standard_normal(shape)
        return jnp.asarray(x + 1j * rng.standard_normal(shape) if dtype == "complex" else x)

    kinds = {"w": ((6,), "complex"), "m": ((4, 3), "complex"), "b": ((3, 2), "real")}
    params = {k: draw(*v) for k, v in kinds.items()}
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p)))
    out = []
    for _ in range(STEPS):
        params, state = step(params, state, {k: draw(*v) for k, v in kinds.items()})
        out.append([np.asarray(params[k]).reshape(-1) for k in sorted(params)])
    return [[np.concatenate([a.real for a in s]), np.concatenate([a.imag for a in s])] for s in out]


@pytest.mark.parametrize("name", [name for name, (_, peer) in OPTAX_PEERS.items()
                                  if peer.rtol is not None and name not in NO_COMPLEX_OPTAX])
def test_jax_opt_steps_complex_params_as_optax(name):
    """Every optax peer that is defined on complex params computes jax_opt's complex updates
    under the peer's documented setting (``|g|^2`` in the second moments: a gradient of ``1j``
    adds ``+(1 - b2)``, not ``-(1 - b2)``, to Adam's)."""
    key, peer = OPTAX_PEERS[name]
    ours, theirs = ours_and_theirs(key, peer, True)
    assert h.max_rel_error(run_complex(ours), run_complex(theirs)) <= peer.rtol


def test_adam_second_moment_of_an_imaginary_gradient_is_positive():
    params = {"w": jnp.zeros(1, jnp.complex64)}
    tx = jax_opt.adam(1e-3)
    _, state = tx.update({"w": jnp.array([1j], jnp.complex64)}, tx.init(params), params)
    nu = optax.tree_utils.tree_get(state, "nu")["w"]
    np.testing.assert_allclose(np.asarray(nu), [0.001], rtol=1e-6)


def test_jax_rprop_refuses_complex_params_and_names_real_view():
    params = {"w": jnp.ones(2, jnp.complex64)}
    with pytest.raises(ValueError, match=r"jax_opt.real_view\(jax_opt.rprop"):
        jax_opt.rprop().init(params)
    tx = jax_opt.real_view(jax_opt.rprop())
    updates, _ = tx.update({"w": jnp.array([1j, 1.0], jnp.complex64)}, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.01j, -0.01], rtol=1e-6)


def test_torch_adafactor_refuses_complex_params():
    p = torch.nn.Parameter(torch.ones(2, 2, dtype=torch.complex64))
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="Adafactor does not support complex parameters"):
        torch_opt.Adafactor([p]).step()


@pytest.mark.parametrize("key", ["adam", "adadelta"])
def test_real_second_moments_round_as_torch_optim(key):
    """For real params the complex-aware square keeps torch.optim's rounding of
    ``addcmul_(g, g, value=1 - b)``, ``((1 - b) * g) * g``, bit for bit after one float32 step."""
    g = np.random.default_rng(3).standard_normal(4096).astype(np.float32)
    p = torch.nn.Parameter(torch.zeros(4096))
    opt = torch_opt.OPTIMIZERS[key]([p])
    p.grad = torch.tensor(g)
    opt.step()
    tx = jax_opt.OPTIMIZERS[key]()
    params = {"w": jnp.zeros(4096, jnp.float32)}
    _, state = tx.update({"w": jnp.asarray(g)}, tx.init(params), params)
    name, entry = {"adam": ("nu", "exp_avg_sq"), "adadelta": ("square_avg", "square_avg")}[key]
    np.testing.assert_array_equal(np.asarray(optax.tree_utils.tree_get(state, name)["w"]),
                                  opt.state[p][entry].numpy())
