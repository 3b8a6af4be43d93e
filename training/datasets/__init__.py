"""Training datasets: PROBA-V Kelvins, Sen2Venµs, WorldStrat (their real on-disk layouts) and
Wald-protocol pairs from any real raster."""

from srcube.training.datasets.probav import KelvinsDataset
from srcube.training.datasets.sen2venus import Sen2VenusDataset
from srcube.training.datasets.wald import Image, WaldMultiFrame, WaldPairs, read_image, split_windows
from srcube.training.datasets.worldstrat import WorldStratDataset

__all__ = ["Image", "KelvinsDataset", "Sen2VenusDataset", "WaldMultiFrame", "WaldPairs", "WorldStratDataset",
           "read_image", "split_windows"]
