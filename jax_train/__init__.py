"""JAX side of the training scripts: Flax NNX models, the training loop (train.py), its checkpoints and the
conversion to and from torch's layouts (checkpoints.py); imports jax/flax, never torch."""
