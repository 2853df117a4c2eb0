"""Local MLX inference: the default model, the model cache and the generation scheduler.

Django-free on purpose: the worker processes that run MLX import this package directly, and
settings, where needed, are read at call time.

Importing the package puts a fast BLAS into the process when one is installed and MLX is not
imported yet: libmlx picks its BLAS once, when it loads (see `providers.mlx.blas`).
"""

from providers.mlx.blas import preload_fast_blas

preload_fast_blas()
