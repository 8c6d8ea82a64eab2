"""Hyperparameter validation and the optimizer-key registry, shared by both backends.

Both backends validate through these functions so that a bad value gives the same
``ValueError`` (naming the argument, the value and the valid range) in JAX and PyTorch.
Values that are not plain numbers (JAX tracers under ``optax.inject_hyperparams``,
schedules, tensors) are not checked here: they cannot be compared at construction.
"""

from __future__ import annotations

import math
import numbers

KEYS = (
    "sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "amsgrad",
    "adamax", "adamw", "nadam", "radam", "adabound", "amsbound", "aggmo",
)

# The rows of the comparisons (benchmarks, results, trajectories): every key, and Lookahead
# around SGD momentum and around Adam.
LOOKAHEAD_SUFFIX = "+lookahead"
# Lookahead's defaults in both backends and every script (Zhang et al. 2019; SPEC.md).
LOOKAHEAD_K, LOOKAHEAD_ALPHA = 5, 0.5
ROWS = KEYS + ("momentum" + LOOKAHEAD_SUFFIX, "adam" + LOOKAHEAD_SUFFIX)


def split_row(row: str) -> tuple[str, bool]:
    """``(key, lookahead)`` of a row: ``"adam+lookahead"`` -> ``("adam", True)``."""
    if row not in ROWS:
        raise ValueError(f"unknown optimizer row {row!r}; choose from: {', '.join(ROWS)}")
    return row.removesuffix(LOOKAHEAD_SUFFIX), row.endswith(LOOKAHEAD_SUFFIX)

# The settings a key fixes on top of its class/function (torch names; see to_jax_kwargs).
KEY_PRESETS = {
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.9, "nesterov": True},
    "amsgrad": {"amsgrad": True},
    "amsbound": {"amsbound": True},
}

# The hyperparameters each key accepts (torch names; lr and weight_decay for all). The CLI
# offers these; tests check them against both backends' signatures.
KEY_ARGS = {
    "sgd": ("momentum", "dampening"),
    "momentum": ("momentum", "dampening"),
    "nesterov": ("momentum",),
    "adagrad": ("lr_decay", "initial_accumulator_value", "eps"),
    "adadelta": ("rho", "eps"),
    "rmsprop": ("alpha", "eps", "momentum", "centered"),
    "adam": ("betas", "eps", "amsgrad"),
    "amsgrad": ("betas", "eps"),
    "adamax": ("betas", "eps"),
    "adamw": ("betas", "eps", "amsgrad"),
    "nadam": ("betas", "eps", "momentum_decay", "decoupled_weight_decay"),
    "radam": ("betas", "eps", "decoupled_weight_decay"),
    "adabound": ("betas", "final_lr", "gamma", "eps", "amsbound"),
    "amsbound": ("betas", "final_lr", "gamma", "eps"),
    "aggmo": ("betas",),
}

# torch name -> jax name, for the arguments whose names differ between the backends.
_RENAMES = {"lr": "learning_rate", "k": "sync_period", "alpha": "slow_step_size"}


def to_jax_kwargs(key: str, torch_kwargs: dict) -> dict:
    """Translate torch_opt keyword arguments of optimizer ``key`` into jax_opt ones.

    ``betas=(b1, b2)`` becomes ``b1=..., b2=...`` except for AggMo, whose ``betas`` is a
    tuple of any length in both backends; RMSprop's ``alpha`` keeps its name.
    """
    out = {}
    for name, value in torch_kwargs.items():
        if name == "betas" and key != "aggmo":
            check_betas(name, value, length=2)
            out["b1"], out["b2"] = value
        elif name == "alpha" and key == "rmsprop":
            out[name] = value
        else:
            out[_RENAMES.get(name, name)] = value
    return out


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fail(name, value, must):
    raise ValueError(f"Invalid {name}: {value!r}; it must be {must}.")


def check_range(name, value, low=0.0, high=math.inf, low_open=False, high_open=False):
    """Raise ValueError unless ``low <= value <= high`` (open ends if asked); NaN fails."""
    if not _is_number(value):
        return
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        left = "(" if low_open else "["
        right = ")" if high_open or high == math.inf else "]"
        _fail(name, value, f"in {left}{low}, {high}{right}")


def check_nonneg(name, value):
    check_range(name, value, 0.0)


def check_beta(name, value):
    check_range(name, value, 0.0, 1.0, high_open=True)


def check_betas(name, betas, length=None):
    """A tuple of decay rates, each in [0, 1); ``length`` fixes how many."""
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__"):
        _fail(name, betas, "a tuple of numbers in [0, 1)")
    if length is not None and len(betas) != length:
        _fail(name, betas, f"a tuple of {length} numbers in [0, 1)")
    if len(betas) == 0:
        _fail(name, betas, "a non-empty tuple of numbers in [0, 1)")
    for i, beta in enumerate(betas):
        check_beta(f"{name}[{i}]", beta)


def check_int(name, value, low=1):
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)) or value < low:
        _fail(name, value, f"an integer >= {low}")


def check_nesterov(nesterov, momentum, dampening):
    """torch.optim.SGD's rule: Nesterov needs momentum > 0 and no dampening."""
    if nesterov and _is_number(momentum) and _is_number(dampening) and (momentum <= 0 or dampening != 0):
        raise ValueError(
            f"Invalid nesterov=True with momentum={momentum!r}, dampening={dampening!r}; "
            "Nesterov momentum requires momentum > 0 and dampening = 0."
        )
