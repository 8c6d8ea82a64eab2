"""PyTorch side of the training scripts: models (imports torch, never jax)."""
