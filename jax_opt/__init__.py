"""Optax GradientTransformations with the arithmetic of torch.optim and the official codes.

Every factory returns an ``optax.GradientTransformation`` (state: NamedTuples of arrays) that
works under ``jax.jit``, ``optax.chain``, ``optax.inject_hyperparams`` and
``optax.MultiSteps``; ``learning_rate`` is a float or an optax schedule. ``OPTIMIZERS`` maps
each key of the registry (``twinopt.registry.OPTIM_DB``) to its factory (the same keys as
``torch_opt.OPTIMIZERS``).
"""

import functools
import importlib

from twinopt.registry import OPTIM_DB

from .adabelief import adabelief, scale_by_adabelief
from .adabound import adabound, amsbound, scale_by_adabound
from .adadelta import adadelta, scale_by_adadelta
from .adafactor import adafactor, scale_by_adafactor
from .adagrad import adagrad, scale_by_adagrad
from .adam import adam, amsgrad, scale_by_adam
from .adamax import adamax, scale_by_adamax
from .adamw import adamw
from .adan import adan, scale_by_adan
from .ademamix import ademamix, scale_by_ademamix
from .adopt import adopt, scale_by_adopt
from .aggmo import aggmo, scale_by_aggmo
from .asgd import asgd, scale_by_asgd
from .lamb import lamb, scale_by_lamb
from .lars import lars, scale_by_trust_ratio
from .lion import lion, scale_by_lion
from .lookahead import LookaheadState, lookahead
from .nadam import nadam, scale_by_nadam
from .radam import radam, scale_by_radam
from .rmsprop import rmsprop, scale_by_rmsprop
from .real_view import real_view
from .rprop import rprop, scale_by_rprop
from .sgd import sgd



def _factory(info):
    """The key's factory: the module's function, with the key's presets where it has them."""
    factory = getattr(importlib.import_module(f".{info.module}", __name__), info.jax)
    return functools.partial(factory, **info.jax_presets) if info.jax_presets else factory


OPTIMIZERS = {info.key: _factory(info) for info in OPTIM_DB}

__all__ = [
    "OPTIMIZERS", "LookaheadState", "adabelief", "adabound", "adadelta", "adafactor", "adagrad", "adam", "adamax",
    "adamw", "adan", "ademamix", "adopt", "aggmo", "amsbound", "amsgrad", "asgd", "lamb", "lars", "lion",
    "lookahead", "nadam", "radam", "real_view", "rmsprop", "rprop", "scale_by_adabelief", "scale_by_adabound",
    "scale_by_adadelta", "scale_by_adafactor", "scale_by_adagrad", "scale_by_adam", "scale_by_adamax",
    "scale_by_adan", "scale_by_ademamix", "scale_by_adopt", "scale_by_aggmo", "scale_by_asgd", "scale_by_lamb",
    "scale_by_lion", "scale_by_nadam", "scale_by_radam", "scale_by_rmsprop", "scale_by_rprop",
    "scale_by_trust_ratio", "sgd",
]
