"""Optax GradientTransformations with the arithmetic of torch.optim and the official codes.

Every factory returns an ``optax.GradientTransformation`` (state: NamedTuples of arrays) that
works under ``jax.jit``, ``optax.chain``, ``optax.inject_hyperparams`` and
``optax.MultiSteps``; ``learning_rate`` is a float or an optax schedule. ``OPTIMIZERS`` maps
each key of SPEC.md to its factory (the same keys as ``torch_opt.OPTIMIZERS``).
"""

import functools

from twinopt.hparams import KEY_PRESETS

from .adabound import adabound, amsbound, scale_by_adabound
from .adadelta import adadelta, scale_by_adadelta
from .adagrad import adagrad, scale_by_adagrad
from .adam import adam, amsgrad, scale_by_adam
from .adamax import adamax, scale_by_adamax
from .adamw import adamw
from .aggmo import aggmo, scale_by_aggmo
from .lookahead import LookaheadState, lookahead
from .nadam import nadam, scale_by_nadam
from .radam import radam, scale_by_radam
from .rmsprop import rmsprop, scale_by_rmsprop
from .sgd import sgd

OPTIMIZERS = {
    "sgd": sgd,
    "momentum": functools.partial(sgd, **KEY_PRESETS["momentum"]),
    "nesterov": functools.partial(sgd, **KEY_PRESETS["nesterov"]),
    "adagrad": adagrad,
    "adadelta": adadelta,
    "rmsprop": rmsprop,
    "adam": adam,
    "amsgrad": amsgrad,
    "adamax": adamax,
    "adamw": adamw,
    "nadam": nadam,
    "radam": radam,
    "adabound": adabound,
    "amsbound": amsbound,
    "aggmo": aggmo,
}

__all__ = [
    "OPTIMIZERS", "LookaheadState", "adabound", "adadelta", "adagrad", "adam", "adamax", "adamw", "aggmo",
    "amsbound", "amsgrad", "lookahead", "nadam", "radam", "rmsprop", "scale_by_adabound", "scale_by_adadelta",
    "scale_by_adagrad", "scale_by_adam", "scale_by_adamax", "scale_by_aggmo", "scale_by_nadam",
    "scale_by_radam", "scale_by_rmsprop", "sgd",
]
