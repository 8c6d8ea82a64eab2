"""torch.optim.Optimizer subclasses with the arithmetic of torch.optim and the official codes.

Every class supports param groups, ``state_dict``/``load_state_dict``, ``closure``,
``torch.optim.lr_scheduler``, ``maximize`` and both a per-tensor and a ``torch._foreach_*``
path (``foreach=``). ``OPTIMIZERS`` maps each key of SPEC.md to its factory (the same keys as
``jax_opt.OPTIMIZERS``); :class:`Lookahead` wraps any optimizer.
"""

import functools

from twinopt.hparams import KEY_PRESETS

from .adabound import AdaBound
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam
from .adamax import Adamax
from .adamw import AdamW
from .aggmo import AggMo
from .apply_if_finite import ApplyIfFinite
from .lookahead import Lookahead
from .nadam import NAdam
from .radam import RAdam
from .rmsprop import RMSprop
from .sgd import SGD

OPTIMIZERS = {
    "sgd": SGD,
    "momentum": functools.partial(SGD, **KEY_PRESETS["momentum"]),
    "nesterov": functools.partial(SGD, **KEY_PRESETS["nesterov"]),
    "adagrad": Adagrad,
    "adadelta": Adadelta,
    "rmsprop": RMSprop,
    "adam": Adam,
    "amsgrad": functools.partial(Adam, **KEY_PRESETS["amsgrad"]),
    "adamax": Adamax,
    "adamw": AdamW,
    "nadam": NAdam,
    "radam": RAdam,
    "adabound": AdaBound,
    "amsbound": functools.partial(AdaBound, **KEY_PRESETS["amsbound"]),
    "aggmo": AggMo,
}

__all__ = [
    "OPTIMIZERS", "SGD", "AdaBound", "Adadelta", "Adagrad", "Adam", "Adamax", "AdamW", "AggMo", "ApplyIfFinite",
    "Lookahead", "NAdam", "RAdam", "RMSprop",
]
