"""JAX side of the training scripts: Flax NNX models and weight conversion (imports jax/flax, never torch)."""
