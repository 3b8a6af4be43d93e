"""srcube pipeline: search STAC catalogs, assemble clear stacks, super-resolve, persist zarr cubes.

>>> from srcube.pipeline import run_region
>>> cube = run_region((4.465, 51.401, 4.509, 51.427), "2024-05-01/2024-06-30", out="demo.zarr")

``super_resolve`` and ``sharpen`` (20 m bands on the 10 m grid, :mod:`pipeline.sr.sharpening`) work on
georeferenced xarray arrays of their own.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("srcube")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

from srcube.pipeline.area import AreaSummary, run_area
from srcube.pipeline.errors import (
    AllCloudyError,
    AssetAuthError,
    AssetError,
    AssetsExcludedWarning,
    CatalogUnavailableError,
    ClusterStartError,
    CorruptCubeError,
    CubeAttributeError,
    CubeMismatchError,
    DeviceMemoryError,
    DiskFullError,
    EmptySearchError,
    FramesDroppedWarning,
    GeorefMismatchWarning,
    HarmonizationWarning,
    IncompatibleWeightsError,
    IncompleteCubeError,
    InvalidAreaError,
    InvalidBBoxError,
    InvalidDataError,
    InvalidDatesError,
    InvalidOptionError,
    ModelConfigError,
    NotACubeError,
    NotAStacApiError,
    OutputExistsError,
    OutputNotWritableError,
    OutputUnreachableError,
    PublishError,
    RegionTooLargeError,
    RepairError,
    SrcubeError,
    SrcubeWarning,
    StaleLockWarning,
    StoreLockedError,
    UnknownBandError,
    UnknownCatalogError,
    UnknownCollectionError,
    UnknownModelError,
    UnknownSensorError,
    UnsupportedScaleError,
    UntrainedWeightsError,
    UnverifiableCubeError,
    WeightsIntegrityError,
    WeightsNotFoundError,
)
from srcube.pipeline.mosaic import open_area
from srcube.pipeline.region import RunOptions, run_region
from srcube.pipeline.sr.infer import super_resolve, super_resolve_views
from srcube.pipeline.sr.sharpening import sharpen
from srcube.pipeline.write.store import open_cube

__all__ = [
    "AllCloudyError",
    "AreaSummary",
    "AssetAuthError",
    "AssetError",
    "AssetsExcludedWarning",
    "CatalogUnavailableError",
    "ClusterStartError",
    "CorruptCubeError",
    "CubeAttributeError",
    "CubeMismatchError",
    "DeviceMemoryError",
    "DiskFullError",
    "EmptySearchError",
    "FramesDroppedWarning",
    "GeorefMismatchWarning",
    "HarmonizationWarning",
    "IncompatibleWeightsError",
    "IncompleteCubeError",
    "InvalidAreaError",
    "InvalidBBoxError",
    "InvalidDataError",
    "InvalidDatesError",
    "InvalidOptionError",
    "ModelConfigError",
    "NotACubeError",
    "NotAStacApiError",
    "OutputExistsError",
    "OutputNotWritableError",
    "OutputUnreachableError",
    "PublishError",
    "RegionTooLargeError",
    "RepairError",
    "RunOptions",
    "SrcubeError",
    "SrcubeWarning",
    "StaleLockWarning",
    "StoreLockedError",
    "UnknownBandError",
    "UnknownCatalogError",
    "UnknownCollectionError",
    "UnknownModelError",
    "UnknownSensorError",
    "UnsupportedScaleError",
    "UntrainedWeightsError",
    "UnverifiableCubeError",
    "WeightsIntegrityError",
    "WeightsNotFoundError",
    "__version__",
    "open_area",
    "open_cube",
    "run_area",
    "run_region",
    "sharpen",
    "super_resolve",
    "super_resolve_views",
]
