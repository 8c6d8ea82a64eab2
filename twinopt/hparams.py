"""Hyperparameter validation, shared by both backends.

Both backends validate through these functions so that a bad value gives the same
``ValueError`` (naming the argument, the value and the valid range) in JAX and PyTorch.
Values that are not plain numbers (JAX tracers under ``optax.inject_hyperparams``,
schedules) are not checked here: they cannot be compared at construction. A torch tensor
(torch.optim takes ``lr=torch.tensor(1e-3)``) is checked as the number it holds, and must hold one.
"""

from __future__ import annotations

import math
import numbers


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fail(name, value, must):
    raise ValueError(f"Invalid {name}: {value!r}; it must be {must}.")


def as_number(name, value):
    """The number a 1-element torch tensor holds (found by its ``numel``: this module imports no
    backend); any other value as it is. A tensor of another size fails."""
    if callable(getattr(value, "numel", None)) and hasattr(value, "item"):
        if value.numel() != 1:
            _fail(name, f"a tensor of shape {tuple(value.shape)}", "a number or a 1-element tensor")
        return value.item()
    return value


def check_range(name, value, low=0.0, high=math.inf, low_open=False, high_open=False):
    """Raise ValueError unless ``low <= value <= high`` (open ends if asked); NaN fails."""
    value = as_number(name, value)
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


def _check_pair(name, pair, valid, must):
    """A pair of numbers; ``valid(a, b)`` decides for plain numbers (NaN fails every comparison)."""
    if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
        _fail(name, pair, must)
    pair = [as_number(f"{name}[{i}]", value) for i, value in enumerate(pair)]
    if all(map(_is_number, pair)) and not valid(*pair):
        _fail(name, pair, must)


def check_etas(name, etas):
    """Rprop's ``(etaminus, etaplus)``: 0 < etaminus < 1 < etaplus (torch.optim.Rprop's rule)."""
    _check_pair(name, etas, lambda minus, plus: 0 < minus < 1 < plus,
                "a pair (etaminus, etaplus) with 0 < etaminus < 1 < etaplus")


def check_step_sizes(name, step_sizes):
    """Rprop's ``(min, max)`` step sizes: 0 <= min <= max."""
    _check_pair(name, step_sizes, lambda low, high: 0 <= low <= high, "a pair (min, max) with 0 <= min <= max")


def check_int(name, value, low=1):
    """An integer >= ``low``; an array (``optax.inject_hyperparams`` passes every numeric argument
    as one) cannot be checked at construction."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < low:
            _fail(name, value, f"an integer >= {low}")
    elif not hasattr(value, "dtype"):
        _fail(name, value, f"an integer >= {low}")


def check_nesterov(nesterov, momentum, dampening):
    """torch.optim.SGD's rule: Nesterov needs momentum > 0 and no dampening."""
    if nesterov and _is_number(momentum) and _is_number(dampening) and (momentum <= 0 or dampening != 0):
        raise ValueError(
            f"Invalid nesterov=True with momentum={momentum!r}, dampening={dampening!r}; "
            "Nesterov momentum requires momentum > 0 and dampening = 0."
        )


def check_clip_schedule(name, value):
    """A function of the step count, None, or one value: a number >= 0 (arrays pass, as
    ``optax.inject_hyperparams`` gives a function's value at each update)."""
    if value is None or callable(value) or hasattr(value, "shape"):
        return
    if not _is_number(value):
        _fail(name, value, "a function of the step count, a number >= 0, or None")
    check_nonneg(name, value)


def check_eps_pair(name, eps):
    """Adafactor's ``(eps1, eps2)``: eps1 >= 0 or None (the params' machine epsilon), eps2 >= 0."""
    must = "a pair (eps1, eps2) with eps1 >= 0 or None, and eps2 >= 0"
    _check_pair(name, eps, lambda eps1, eps2: eps1 >= 0 and eps2 >= 0, must)
    if eps[0] is None and _is_number(eps[1]) and not eps[1] >= 0:
        _fail(name, eps, must)


def check_choice(name, value, choices):
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        _fail(name, value, f"one of {', '.join(map(repr, choices))}")
