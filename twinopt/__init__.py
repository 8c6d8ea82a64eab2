"""Backend-neutral code shared by ``jax_opt`` and ``torch_opt``.

Nothing here imports JAX or PyTorch, so either backend can be installed alone.
"""
