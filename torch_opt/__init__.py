"""torch.optim.Optimizer subclasses with the arithmetic of torch.optim and the official codes.

Every class supports param groups, ``state_dict``/``load_state_dict``, ``closure``,
``torch.optim.lr_scheduler``, ``maximize`` and both a per-tensor and a ``torch._foreach_*``
path (``foreach=``). ``OPTIMIZERS`` maps each key of the registry
(``twinopt.registry.OPTIM_DB``) to its factory (the same keys as ``jax_opt.OPTIMIZERS``);
:class:`Lookahead` wraps any optimizer.
"""

import functools
import importlib

from twinopt.registry import OPTIM_DB

from .adabelief import AdaBelief
from .adabound import AdaBound
from .adadelta import Adadelta
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam
from .adamax import Adamax
from .adamw import AdamW
from .adan import Adan
from .ademamix import AdEMAMix
from .adopt import ADOPT
from .aggmo import AggMo
from .apply_if_finite import ApplyIfFinite
from .asgd import ASGD
from .lamb import LAMB
from .lars import LARS
from .lion import Lion
from .lookahead import Lookahead
from .nadam import NAdam
from .radam import RAdam
from .rmsprop import RMSprop
from .rprop import Rprop
from .sgd import SGD



def _factory(info):
    """The key's factory: the module's class, with the key's presets."""
    cls = getattr(importlib.import_module(f".{info.module}", __name__), info.torch)
    return functools.partial(cls, **info.presets) if info.presets else cls


OPTIMIZERS = {info.key: _factory(info) for info in OPTIM_DB}

__all__ = [
    "OPTIMIZERS", "AdaBelief", "AdaBound", "Adadelta", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "Adan",
    "AdEMAMix", "ADOPT", "AggMo", "ApplyIfFinite", "ASGD", "LAMB", "LARS", "Lion", "Lookahead", "NAdam", "RAdam",
    "RMSprop", "Rprop", "SGD",
]
