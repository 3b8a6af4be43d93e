"""srcube pipeline: search STAC catalogs, assemble clear stacks, super-resolve, persist zarr cubes.

>>> from srcube.pipeline import run_region
>>> cube = run_region((4.465, 51.401, 4.509, 51.427), "2024-05-01/2024-06-30", out="demo.zarr")

``super_resolve`` and ``sharpen`` (20 m bands on the 10 m grid, :mod:`pipeline.sr.sharpening`) work on
georeferenced xarray arrays of their own.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("srcube")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

# The public API, one line per name: what type checkers read, and (srcube._lazy.declared) the names this face
# imports from their modules on first use at run time, so that `import srcube` imports no scientific stack.
if TYPE_CHECKING:
    from srcube.pipeline.area import AreaSummary as AreaSummary
    from srcube.pipeline.area import run_area as run_area
    from srcube.pipeline.errors import AllCloudyError as AllCloudyError
    from srcube.pipeline.errors import AssetAuthError as AssetAuthError
    from srcube.pipeline.errors import AssetError as AssetError
    from srcube.pipeline.errors import AssetsExcludedWarning as AssetsExcludedWarning
    from srcube.pipeline.errors import CatalogUnavailableError as CatalogUnavailableError
    from srcube.pipeline.errors import ClusterStartError as ClusterStartError
    from srcube.pipeline.errors import CorruptCubeError as CorruptCubeError
    from srcube.pipeline.errors import CubeAttributeError as CubeAttributeError
    from srcube.pipeline.errors import CubeMismatchError as CubeMismatchError
    from srcube.pipeline.errors import DeviceMemoryError as DeviceMemoryError
    from srcube.pipeline.errors import DiskFullError as DiskFullError
    from srcube.pipeline.errors import EmptySearchError as EmptySearchError
    from srcube.pipeline.errors import FramesDroppedWarning as FramesDroppedWarning
    from srcube.pipeline.errors import GeorefMismatchWarning as GeorefMismatchWarning
    from srcube.pipeline.errors import HarmonizationWarning as HarmonizationWarning
    from srcube.pipeline.errors import IncompatibleWeightsError as IncompatibleWeightsError
    from srcube.pipeline.errors import IncompleteCubeError as IncompleteCubeError
    from srcube.pipeline.errors import InvalidAreaError as InvalidAreaError
    from srcube.pipeline.errors import InvalidBBoxError as InvalidBBoxError
    from srcube.pipeline.errors import InvalidDataError as InvalidDataError
    from srcube.pipeline.errors import InvalidDatesError as InvalidDatesError
    from srcube.pipeline.errors import InvalidOptionError as InvalidOptionError
    from srcube.pipeline.errors import ModelConfigError as ModelConfigError
    from srcube.pipeline.errors import NotACubeError as NotACubeError
    from srcube.pipeline.errors import NotAStacApiError as NotAStacApiError
    from srcube.pipeline.errors import OnnxExportError as OnnxExportError
    from srcube.pipeline.errors import OnnxUnavailableError as OnnxUnavailableError
    from srcube.pipeline.errors import OutputExistsError as OutputExistsError
    from srcube.pipeline.errors import OutputNotWritableError as OutputNotWritableError
    from srcube.pipeline.errors import OutputUnreachableError as OutputUnreachableError
    from srcube.pipeline.errors import PublishError as PublishError
    from srcube.pipeline.errors import RegionTooLargeError as RegionTooLargeError
    from srcube.pipeline.errors import RepairError as RepairError
    from srcube.pipeline.errors import SrcubeError as SrcubeError
    from srcube.pipeline.errors import SrcubeWarning as SrcubeWarning
    from srcube.pipeline.errors import StaleLockWarning as StaleLockWarning
    from srcube.pipeline.errors import StoreLockedError as StoreLockedError
    from srcube.pipeline.errors import UnknownBandError as UnknownBandError
    from srcube.pipeline.errors import UnknownCatalogError as UnknownCatalogError
    from srcube.pipeline.errors import UnknownCollectionError as UnknownCollectionError
    from srcube.pipeline.errors import UnknownModelError as UnknownModelError
    from srcube.pipeline.errors import UnknownSensorError as UnknownSensorError
    from srcube.pipeline.errors import UnsupportedScaleError as UnsupportedScaleError
    from srcube.pipeline.errors import UntrainedWeightsError as UntrainedWeightsError
    from srcube.pipeline.errors import UnverifiableCubeError as UnverifiableCubeError
    from srcube.pipeline.errors import WeightsIntegrityError as WeightsIntegrityError
    from srcube.pipeline.errors import WeightsNotFoundError as WeightsNotFoundError
    from srcube.pipeline.mosaic import open_area as open_area
    from srcube.pipeline.options import RunOptions as RunOptions
    from srcube.pipeline.region import run_region as run_region
    from srcube.pipeline.sr.infer import super_resolve as super_resolve
    from srcube.pipeline.sr.infer import super_resolve_views as super_resolve_views
    from srcube.pipeline.sr.sharpening import sharpen as sharpen
    from srcube.pipeline.write.store import open_cube as open_cube
else:
    from srcube import _lazy

    _public = _lazy.declared(__file__)
    __getattr__, __dir__ = _lazy.attach(__name__, _public)
    __all__ = sorted([*_public, "__version__"])
