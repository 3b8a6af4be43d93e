"""Lazy package faces (PEP 562): a package's public names, each imported from its module when first used.

A face that imported its names eagerly made ``import srcube`` import torch, xarray, odc-stac, Dask and rasterio (8 s
of CPU) for ``srcube --help``. A face lists its public names once, as the imports of its ``if TYPE_CHECKING:``
block: that is what type checkers and editors read. At run time :func:`declared` reads the same block from the
face's source (the way ``lazy_loader.attach_stub`` reads a stub) and :func:`attach` gives the face a module
``__getattr__`` and ``__dir__``: a name's module is imported on its first use and the value is kept in the face, so
later uses are plain attribute reads and ``face.name is module.name``.

This module imports nothing of srcube's: every layer's face may use it (the layer contract stays as it was).
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def declared(path: str) -> dict[str, str]:
    """Public name -> its module, from the ``from MODULE import name as name`` lines of the ``if TYPE_CHECKING:``
    block of the face at ``path`` (its ``__file__``)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), path)
    names: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            continue
        for stmt in node.body:
            if not isinstance(stmt, ast.ImportFrom) or stmt.level or stmt.module is None or any(
                    a.asname != a.name for a in stmt.names):
                raise ImportError(f"{path}:{stmt.lineno}: a lazy face's TYPE_CHECKING block holds only its public "
                                  "names, as 'from srcube.x import name as name' lines (absolute; the alias says "
                                  "the name is re-exported)")
            for alias in stmt.names:
                names[alias.name] = stmt.module
    if not names:
        raise ImportError(f"{path} has no 'if TYPE_CHECKING:' block of imports naming its public names")
    return names


def attach(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of the face ``package`` (its ``__name__``), for ``names`` (public name ->
    the module it is imported from).

    A name that is not public but is a submodule not yet imported (``srcube.models.weights``) is imported as
    ``import package.name`` would: the eager faces made every submodule they imported an attribute, and code may
    rely on it.
    """
    face = sys.modules[package]

    def __getattr__(name: str) -> Any:
        where = names.get(name)
        if where is not None:
            value = getattr(importlib.import_module(where), name)
            setattr(face, name, value)  # __getattr__ is not called for it again
            return value
        if not name.startswith("__"):  # never a submodule: __path__, __wrapped__, ... that tools probe for
            submodule = f"{package}.{name}"
            try:
                return importlib.import_module(submodule)
            except ModuleNotFoundError as exc:
                if exc.name != submodule:  # the submodule exists and lacks something it imports: that error
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(face), *names})

    return __getattr__, __dir__
