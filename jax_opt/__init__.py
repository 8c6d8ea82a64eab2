"""Optax GradientTransformations with the exact arithmetic of torch_opt (see SPEC.md)."""
from .adam import adam, amsgrad, scale_by_adam
from .adamw import adamw

OPTIMIZERS = {"adam": adam, "amsgrad": amsgrad, "adamw": adamw}
