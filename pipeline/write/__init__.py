"""Write: zarr cubes, their transaction model and lock, quicklooks."""
