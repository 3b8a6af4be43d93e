"""Validate a zarr store's GeoZarr conventions with geozarr-toolkit; run by ``.venv-geozarr``'s Python (3.12), not
srcube's (``scripts/geozarr.sh`` installs it). Prints one JSON document: for the root group and each group given,
the toolkit's errors per convention it detects, the conventions it detects, and whether the multiscales layout's
assets exist. Usage: ``python geozarr_check.py STORE [GROUP ...]``."""

import json
import sys

import zarr
from geozarr_toolkit.conventions import MultiscalesAttrs
from geozarr_toolkit.helpers.validation import detect_conventions, validate_group, validate_multiscales_structure


def check(store: str, path: str) -> dict:
    group = zarr.open_group(store, path=path or None, mode="r", use_consolidated=False)
    attrs = dict(group.attrs)
    out = {"detected": detect_conventions(attrs), "errors": validate_group(group)}
    if "multiscales" in attrs:
        _, missing = validate_multiscales_structure(group)
        out["structure"] = missing
        try:
            MultiscalesAttrs(**attrs)  # the zarr_conventions list declares multiscales
        except Exception as exc:  # a pydantic ValidationError: reported, not raised
            out["errors"]["multiscales_attrs"] = [str(exc)]
    return out


if __name__ == "__main__":
    store, groups = sys.argv[1], sys.argv[2:]
    print(json.dumps({g or "/": check(store, g) for g in ["", *groups]}))
