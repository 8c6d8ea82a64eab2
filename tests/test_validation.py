"""Invalid hyperparameters raise ValueError naming the argument and the value, in both
backends, for every optimizer and every numeric argument: a matrix generated from the
signatures, so a new argument without a rule fails here."""

import inspect
import math

import jax.numpy as jnp
import optax
import pytest
import torch

import jax_opt
import torch_opt
from twinopt.registry import KEYS

NAN = math.nan
# Invalid values by argument name, both backends' vocabularies.
INVALID = {
    **{name: [-0.1, NAN] for name in (
        "lr", "learning_rate", "weight_decay", "eps", "momentum", "dampening", "lr_decay",
        "initial_accumulator_value", "final_lr", "momentum_decay")},
    **{name: [-0.1, 1.0, NAN] for name in ("b1", "b2", "b3")},
    "max_grad_norm": [-0.1, NAN],  # Adan
    "rho": [-0.1, 1.5, NAN],
    "alpha": [-0.1, NAN],
    "gamma": [0.0, -1e-3, NAN],
    "trust_coefficient": [-0.1, NAN],  # LARS
    **{name: [0.0, -1.0, NAN] for name in ("beta3_warmup", "alpha_warmup")},  # AdEMAMix: steps > 0, or None
    **{name: [-0.1, NAN, "ab"] for name in ("clip_lambda", "clip_value_fn")},  # ADOPT: a function, value >= 0, None
    "betas": [(1.0, 0.999), (0.9, -0.1), (0.9, NAN), (0.9,), "ab"],
    **{name: [-0.1, NAN] for name in ("lambd", "t0")},
    "etas": [(0.0, 1.2), (0.5, 1.0), (1.0, 1.2), (0.5, NAN), (0.5,), "ab"],
    "step_sizes": [(-1e-6, 50), (1.0, 0.5), (1e-6, NAN), (1e-6,), "ab"],
    # Adafactor (its eps: -0.1 and NaN above are not pairs)
    "beta2_decay": [0.1, NAN], "d": [0.5, NAN], "min_dim_size_to_factor": [-1, 1.5], "layout": ["tf"],
}
ADAFACTOR_EPS = [(None, -0.1), (-0.1, 1e-3), (NAN, 1e-3), (1e-30,), "ab"]
AGGMO_BETAS = [(), (0.5, 1.0), (-0.1,), "ab"]
NOT_HYPERPARAMETERS = {"params", "foreach", "fused", "maximize", "capturable", "differentiable", "nesterov", "amsgrad",
                       "amsbound", "centered",
                       "decoupled_weight_decay", "exclude_vectors", "decouple", "unclipped",
                       "weight_decouple", "fixed_decay", "rectify", "degenerated_to_sgd", "no_prox",
                       "relative_step", "scale_parameter", "add_eps1"}


def cases(backend):
    for key in KEYS:
        factory = (torch_opt if backend == "torch" else jax_opt).OPTIMIZERS[key]
        for name in inspect.signature(factory).parameters:
            if name in NOT_HYPERPARAMETERS:
                continue
            values = {("aggmo", "betas"): AGGMO_BETAS, ("adafactor", "eps"): INVALID[name] + ADAFACTOR_EPS}.get(
                (key, name), INVALID[name])
            for value in values:
                yield pytest.param(key, name, value, id=f"{key}-{name}={value!r}")


def check_message(err, name, value):
    message = str(err.value)
    assert name in message, message
    if not isinstance(value, tuple):
        assert repr(value) in message, message


@pytest.mark.parametrize("key, name, value", list(cases("torch")))
def test_torch_rejects(key, name, value):
    with pytest.raises(ValueError) as err:
        torch_opt.OPTIMIZERS[key]([torch.nn.Parameter(torch.zeros(2))], **{name: value})
    check_message(err, name, value)


@pytest.mark.parametrize("key, name, value", list(cases("jax")))
def test_jax_rejects(key, name, value):
    with pytest.raises(ValueError) as err:
        jax_opt.OPTIMIZERS[key](**{name: value})
    check_message(err, name, value)


@pytest.mark.parametrize("key", KEYS)
def test_torch_checks_tensor_hyperparameters_as_the_number_they_hold(key):
    """As torch.optim: a tensor lr (or beta) is checked at construction, and must hold one number."""
    params = [torch.nn.Parameter(torch.zeros(2))]
    cls = torch_opt.OPTIMIZERS[key]
    with pytest.raises(ValueError, match=r"Invalid lr: 'a tensor of shape \(2,\)'; it must be a number or a 1-element"):
        cls(params, lr=torch.tensor([1e-3, 1e-3]))
    with pytest.raises(ValueError, match="Invalid lr: -0.1"):
        cls(params, lr=torch.tensor(-0.1, dtype=torch.float64))
    betas = inspect.signature(cls).parameters.get("betas")
    if betas is not None:
        bad = (torch.tensor([0.9, 0.8]), *betas.default[1:])
        with pytest.raises(ValueError, match=r"Invalid betas\[0\]: 'a tensor of shape \(2,\)'"):
            cls(params, betas=bad)


def test_matrix_is_large():
    assert len(list(cases("torch"))) > 100 and len(list(cases("jax"))) > 100


@pytest.mark.parametrize("k, alpha, name", [(0, 0.5, "k"), (1.5, 0.5, "k"), (5, 0.0, "alpha"), (5, 1.5, "alpha"),
                                            (5, NAN, "alpha")])
def test_lookahead_rejects(k, alpha, name):
    inner = torch_opt.SGD([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match=name):
        torch_opt.Lookahead(inner, k=k, alpha=alpha)
    jax_name = {"k": "sync_period", "alpha": "slow_step_size"}[name]
    with pytest.raises(ValueError, match=jax_name):
        jax_opt.lookahead(jax_opt.sgd(), sync_period=k, slow_step_size=alpha)


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="nesterov"):
        torch_opt.SGD([torch.nn.Parameter(torch.zeros(2))], nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        jax_opt.sgd(nesterov=True)


def test_valid_edge_values_are_accepted():
    """The bounds themselves are valid where the algorithm allows them."""
    p = [torch.nn.Parameter(torch.zeros(2))]
    torch_opt.Adam(p, lr=0.0, betas=(0.0, 0.0), eps=0.0)
    jax_opt.adam(learning_rate=0.0, b1=0.0, b2=0.0, eps=0.0)
    torch_opt.Lookahead(torch_opt.SGD(p), k=1, alpha=1.0)
    jax_opt.lookahead(jax_opt.sgd(), sync_period=1, slow_step_size=1.0)
    # Schedules and arrays (optax.inject_hyperparams) are not numbers: not checked at construction.
    jax_opt.adam(learning_rate=optax.constant_schedule(1e-3), b1=jnp.asarray(0.9))
