"""Search: STAC catalogs, their quirks, and access to their assets."""
