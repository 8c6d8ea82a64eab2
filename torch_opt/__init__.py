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

from .adabound import AdaBound
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam
from .adamax import Adamax
from .adamw import AdamW
from .aggmo import AggMo
from .apply_if_finite import ApplyIfFinite
from .lion import Lion
from .lookahead import Lookahead
from .nadam import NAdam
from .radam import RAdam
from .rmsprop import RMSprop
from .sgd import SGD



def _factory(info):
    """The key's factory: the module's class, with the key's presets."""
    cls = getattr(importlib.import_module(f".{info.module}", __name__), info.torch)
    return functools.partial(cls, **info.presets) if info.presets else cls


OPTIMIZERS = {info.key: _factory(info) for info in OPTIM_DB}

__all__ = [
    "OPTIMIZERS", "SGD", "AdaBound", "Adadelta", "Adagrad", "Adam", "Adamax", "AdamW", "AggMo", "ApplyIfFinite",
    "Lion", "Lookahead", "NAdam", "RAdam", "RMSprop",
]
