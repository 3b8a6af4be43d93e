"""srcube: super-resolved, analysis-ready data cubes from satellite archives (STAC -> Dask -> zarr).

>>> import srcube
>>> cube = srcube.run_region((4.465, 51.401, 4.509, 51.427), "2024-05-01/2024-06-30", out="demo.zarr")

The layers, top to bottom (imports go downwards only; an import-linter contract checks it):
``srcube.cli`` -> ``srcube.flows`` / ``srcube.training`` -> ``srcube.pipeline`` -> ``srcube.models``.
"""

from srcube.pipeline import (
    AllCloudyError,
    CatalogUnavailableError,
    EmptySearchError,
    IncompleteCubeError,
    InvalidBBoxError,
    InvalidDatesError,
    InvalidOptionError,
    NotACubeError,
    OutputExistsError,
    OutputNotWritableError,
    RegionTooLargeError,
    RunOptions,
    SrcubeError,
    UnknownBandError,
    UnknownCatalogError,
    UnknownCollectionError,
    UnknownModelError,
    UnsupportedScaleError,
    __version__,
    open_cube,
    run_region,
    sharpen,
    super_resolve,
)

__all__ = [
    "AllCloudyError",
    "CatalogUnavailableError",
    "EmptySearchError",
    "IncompleteCubeError",
    "InvalidBBoxError",
    "InvalidDatesError",
    "InvalidOptionError",
    "NotACubeError",
    "OutputExistsError",
    "OutputNotWritableError",
    "RegionTooLargeError",
    "RunOptions",
    "SrcubeError",
    "UnknownBandError",
    "UnknownCatalogError",
    "UnknownCollectionError",
    "UnknownModelError",
    "UnsupportedScaleError",
    "__version__",
    "open_cube",
    "run_region",
    "sharpen",
    "super_resolve",
]
