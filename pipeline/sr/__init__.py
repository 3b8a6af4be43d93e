"""Super-resolve: the tiled-map engine over Dask, single-image, multi-frame and band sharpening."""
