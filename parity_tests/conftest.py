import jax

# Float64 parity needs x64; float32 arrays stay float32 under it (scalars are cast per leaf).
jax.config.update("jax_enable_x64", True)
