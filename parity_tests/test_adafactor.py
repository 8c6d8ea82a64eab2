"""Adafactor beyond torch.optim.Adafactor's arithmetic (which test_update_parity checks): the options
that reach the other implementations, against them; optax's factored path on matrices of 128+
rows and columns; ``layout="flax"`` against torch_opt on the torch layouts; injected
hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from optax._src import factorized
from pytorch_optimizer import AdaFactor

import jax_opt
import torch_opt

from . import harness as h

TOL = 1e-12
ADAFACTOR = torch_opt.OPTIMIZERS["adafactor"]


def torch_run(make, params, grads):
    with h.torch_default_dtype(np.float64):
        return h.trajectory(h.TorchStepper(make, params, [{}] * len(params)), grads)


# Options against pytorch_optimizer.AdaFactor (no momentum), which adds eps1 and has both schedules.
# eps1 = 1e-6 is of the size of the scalar's g * g (gradients ~1e-3): adding it and clamping with it differ.
PYTORCH_OPTIMIZER = {
    "add_eps1": ({"lr": 1e-2, "add_eps1": True, "eps": (1e-6, 1e-3)}, {"eps1": 1e-6}),
    "fixed_lr": ({"lr": 0.2, "relative_step": False, "add_eps1": True, "eps": (1e-6, 1e-3)},
                 {"lr": 0.2, "relative_step": False, "eps1": 1e-6}),
    "no_parameter_scale": ({"lr": 0.05, "relative_step": False, "scale_parameter": False, "add_eps1": True,
                            "eps": (1e-6, 1e-3)}, {"lr": 0.05, "relative_step": False, "scale_parameter": False,
                                                   "eps1": 1e-6}),
}


@pytest.mark.parametrize("theirs_foreach", [False, True], ids=["theirs-single", "theirs-foreach"])
@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("name", list(PYTORCH_OPTIMIZER))
def test_options_compute_pytorch_optimizers_steps(name, foreach, theirs_foreach):
    ours, theirs = PYTORCH_OPTIMIZER[name]
    params, grads = h.make_problem()
    want = torch_run(lambda g: AdaFactor(g, betas=(None, 0.999), foreach=theirs_foreach, **theirs), params, grads)
    assert h.max_rel_error(torch_run(lambda g: ADAFACTOR(g, foreach=foreach, **ours), params, grads), want) <= TOL
    clamped = {**ours, "add_eps1": False}  # guard: the option is what makes them agree
    assert h.max_rel_error(torch_run(lambda g: ADAFACTOR(g, foreach=foreach, **clamped), params, grads), want) > 1e-6


# Every option away from torch.optim's arithmetic, in both backends, and the case where it matters:
# min_dim_size_to_factor 3 factors (4, 3) and (130, 3), not (2, 3, 2) (its last two dims (3, 2)); the
# relative step min(lr, 1/sqrt(t)) is lr below lr = 1e-2 for 1e4 steps.
OPTIONS = {"relative_step": (False, "adafactor-relative"), "scale_parameter": (False, "adafactor"),
           "add_eps1": (True, "adafactor"), "min_dim_size_to_factor": (3, "adafactor")}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_options_agree_across_backends(option, dtype):
    value, case = OPTIONS[option]
    key, defaults = h.case_kwargs(case, 0.05)
    groups = [{**kw, option: value} for kw in defaults]
    params, grads = h.make_problem(dtype=dtype)
    with h.torch_default_dtype(dtype):
        single, multi = (h.trajectory(h.TorchStepper(h.torch_factory(key, "ours", foreach), params, groups), grads)
                         for foreach in (False, True))
    ours_jax = h.trajectory(h.JaxStepper(h.jax_transform(key, groups), params), grads)
    tol = {np.float64: TOL, np.float32: 1e-5}[dtype]
    assert h.max_rel_error(multi, single) <= tol and h.max_rel_error(ours_jax, single) <= tol
    default = h.trajectory(h.JaxStepper(h.jax_transform(key, defaults), params), grads)
    assert h.max_rel_error(default, single) > 1e-6  # guard: the option changed the steps


def jax_run(tx, shapes, steps=120, seed=1):
    rng = np.random.default_rng(seed)
    params = {f"p{i}": jnp.asarray(rng.standard_normal(s)) for i, s in enumerate(shapes)}
    grads = [{k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in params.items()} for _ in range(steps)]

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state, out = tx.init(params), [[np.asarray(params[k]) for k in sorted(params)]]
    for g in grads:
        params, state = step(params, state, g)
        out.append([np.asarray(params[k]) for k in sorted(params)])
    return out


OPTAX_SETTING = {"relative_step": False, "add_eps1": True, "eps": (1e-30, 1e-3), "min_dim_size_to_factor": 128}
# Factored by optax and by ours: a matrix of 128+ rows and columns, a 3-d tensor whose two largest dims are
# its last; not: a matrix below 128 and a vector.
OPTAX_SHAPES = [(6,), (3, 2), (130, 129), (2, 128, 130)]


def optax_with_float64_decay(lr):
    """optax.adafactor's chain, with its decay 1 - t^-0.8 computed in float64 (optax: float32)."""
    def decay(step, exponent):
        return 1.0 - jnp.asarray(step + 1, jnp.float64) ** (-exponent)

    return optax.chain(factorized.scale_by_factored_rms(decay_rate_fn=decay), optax.clip_by_block_rms(1.0),
                       optax.scale_by_learning_rate(lr, flip_sign=False), optax.scale_by_param_block_rms(),
                       optax.scale(-1.0))


@pytest.mark.parametrize("lr", [1e-2, 0.5])
def test_optax_factored_path(lr):
    """With optax's settings ours is optax.adafactor but for its float32 decay rate: with that in
    float64 the two agree to rounding, factored params included; as optax computes it, to the
    registry's peer rtol (1e-8) at lr 1e-2."""
    ours = jax_run(jax_opt.OPTIMIZERS["adafactor"](lr, **OPTAX_SETTING), OPTAX_SHAPES, steps=60)
    assert h.max_rel_error(ours, jax_run(optax_with_float64_decay(lr), OPTAX_SHAPES, steps=60)) <= TOL
    theirs = jax_run(optax.adafactor(lr), OPTAX_SHAPES, steps=60)
    assert 1e-10 < h.max_rel_error(ours, theirs) <= (1e-8 if lr == 1e-2 else 1e-6)
    tx = jax_opt.OPTIMIZERS["adafactor"](lr, **OPTAX_SETTING)
    state = tx.init({"a": jnp.zeros((130, 129)), "b": jnp.zeros((3, 2))})
    assert state[0].row_var["a"].shape == (130, 1) and state[0].row_var["b"] is None


# Flax kernels and their torch twins: Dense (in, out) / (out, in), Conv (kh, kw, in, out) / (out, in, kh, kw).
FLAX_TO_TORCH = {(4, 3): (1, 0), (3, 2, 4, 5): (3, 2, 0, 1), (6,): (0,)}


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_flax_layout_steps_as_the_torch_twin(foreach):
    """layout="flax" factors the axes torch's layout has last: a Flax kernel follows its torch twin,
    and each state entry is the twin's, transposed as the weights are."""
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(s) for s in FLAX_TO_TORCH]
    grads = [[rng.standard_normal(s) for s in FLAX_TO_TORCH] for _ in range(60)]
    perms = list(FLAX_TO_TORCH.values())
    twin = torch_run(lambda g: ADAFACTOR(g, weight_decay=0.1, foreach=foreach),
                     [[p.transpose(perm) for p, perm in zip(params, perms)]],
                     [[[g.transpose(perm) for g, perm in zip(gs, perms)]] for gs in grads])
    back = [[p.transpose(np.argsort(perm)) for p, perm in zip(step, perms)] for step in twin]
    for layout, agrees in (("flax", True), ("torch", False)):
        tx = jax_opt.OPTIMIZERS["adafactor"](weight_decay=0.1, layout=layout)
        ours = h.trajectory(h.JaxStepper(tx, [params]), [[g] for g in grads])
        assert (h.max_rel_error(ours, back) <= TOL) == agrees, layout
    # torch's row_var (..., n, 1) and col_var (..., 1, m) are the Flax entries transposed as their kernels.
    state = jax_opt.OPTIMIZERS["adafactor"](layout="flax").init([jnp.zeros(s) for s in FLAX_TO_TORCH])[0]
    twins = [torch.nn.Parameter(torch.zeros([s[i] for i in perm])) for s, perm in FLAX_TO_TORCH.items()]
    opt = ADAFACTOR(twins)
    for p in twins:
        p.grad = torch.ones_like(p)
    opt.step()
    for i, perm in enumerate(perms[:2]):
        for name in ("row_var", "col_var"):
            assert getattr(state, name)[i].transpose(perm).shape == opt.state[twins[i]][name].shape, name
    assert state.variance[2].shape == opt.state[twins[2]]["variance"].shape and state.row_var[2] is None


def test_injected_hyperparameters_take_the_same_steps():
    """Under optax.inject_hyperparams every number is an array: which params are factored is decided
    at init, and the traced beta2_decay, d and learning rate give the plain steps."""
    kwargs = dict(learning_rate=0.05, beta2_decay=-0.7, d=1.5, weight_decay=0.01, min_dim_size_to_factor=3)
    plain = jax_run(jax_opt.OPTIMIZERS["adafactor"](**kwargs), OPTAX_SHAPES[:2] + [(4, 3)], steps=20)
    injected = jax_run(optax.inject_hyperparams(jax_opt.OPTIMIZERS["adafactor"])(**kwargs), OPTAX_SHAPES[:2] + [(4, 3)],
                       steps=20)
    assert h.max_rel_error(injected, plain) <= TOL
