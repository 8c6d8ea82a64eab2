"""torch.optim.Optimizer subclasses with the exact arithmetic of jax_opt (see SPEC.md)."""
from .adam import Adam
from .adamw import AdamW
import functools
OPTIMIZERS = {"adam": Adam, "amsgrad": functools.partial(Adam, amsgrad=True), "adamw": AdamW}
