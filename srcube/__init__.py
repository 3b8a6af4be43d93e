"""srcube: super-resolved, analysis-ready data cubes from satellite archives (STAC -> Dask -> zarr).

>>> import srcube
>>> cube = srcube.run_region((4.465, 51.401, 4.509, 51.427), "2024-05-01/2024-06-30", out="demo.zarr")

The public API is :mod:`srcube.pipeline`'s (``run_region``, ``super_resolve``, ``sharpen``, ``open_cube``,
``RunOptions`` and the typed errors), re-exported here, each imported on first use. The layers, top to bottom
(imports go downwards only; an import-linter contract checks it): ``srcube.cli`` -> ``srcube.flows`` /
``srcube.training`` -> ``srcube.pipeline`` -> ``srcube.models``.
"""

from typing import TYPE_CHECKING

# The public API is listed once, in srcube.pipeline's face; this face hands each name over on first use (PEP 562),
# so `import srcube` imports no scientific stack (srcube._lazy).
if TYPE_CHECKING:
    from srcube.pipeline import *  # noqa: F403
    from srcube.pipeline import __version__ as __version__
else:
    from srcube import _lazy, pipeline

    __all__ = pipeline.__all__
    __getattr__, __dir__ = _lazy.attach(__name__, dict.fromkeys(__all__, "srcube.pipeline"))
