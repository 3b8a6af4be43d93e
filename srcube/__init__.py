"""srcube: super-resolved, analysis-ready data cubes from satellite archives (STAC -> Dask -> zarr).

>>> import srcube
>>> cube = srcube.run_region((4.465, 51.401, 4.509, 51.427), "2024-05-01/2024-06-30", out="demo.zarr")

The public API is :mod:`srcube.pipeline`'s (``run_region``, ``super_resolve``, ``sharpen``, ``open_cube``,
``RunOptions`` and the typed errors), re-exported here. The layers, top to bottom (imports go downwards
only; an import-linter contract checks it): ``srcube.cli`` -> ``srcube.flows`` / ``srcube.training`` ->
``srcube.pipeline`` -> ``srcube.models``.
"""

from srcube.pipeline import *  # noqa: F403  (the public API, listed once in srcube.pipeline.__all__)
from srcube.pipeline import __all__ as __all__
