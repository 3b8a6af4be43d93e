"""Training datasets: PROBA-V Kelvins, Sen2Venµs, WorldStrat (their real on-disk layouts) and
Wald-protocol pairs from any real raster."""

from typing import TYPE_CHECKING

# The public names, one line each: what type checkers read, and (srcube._lazy.declared) what this face imports on
# first use at run time (torch and rasterio come with them, not with the package)
if TYPE_CHECKING:
    from srcube.training.datasets.probav import KelvinsDataset as KelvinsDataset
    from srcube.training.datasets.sen2venus import Sen2VenusDataset as Sen2VenusDataset
    from srcube.training.datasets.wald import Image as Image
    from srcube.training.datasets.wald import WaldMultiFrame as WaldMultiFrame
    from srcube.training.datasets.wald import WaldPairs as WaldPairs
    from srcube.training.datasets.wald import read_image as read_image
    from srcube.training.datasets.wald import split_windows as split_windows
    from srcube.training.datasets.worldstrat import WorldStratDataset as WorldStratDataset
else:
    from srcube import _lazy

    _public = _lazy.declared(__file__)
    __getattr__, __dir__ = _lazy.attach(__name__, _public)
    __all__ = sorted(_public)
