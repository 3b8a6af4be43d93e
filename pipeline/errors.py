"""Typed errors and warnings of srcube.

Every error says what was given and what to change. They are raised before any work is done
(no search, no cluster, nothing written) whenever the input alone shows the run cannot succeed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator

from srcube import models
from srcube.pipeline.redact import redact


class SrcubeError(Exception):
    """Base class of all srcube errors. Messages are redacted: no credentials from URLs or the
    environment ever reach an error text (see :mod:`pipeline.redact`)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class SrcubeWarning(UserWarning):
    """Base class of all srcube warnings."""


# --- request validation ----------------------------------------------------------------------


class InvalidBBoxError(SrcubeError, ValueError):
    """The bounding box is malformed, out of range, reversed or degenerate."""


class InvalidAreaError(SrcubeError, ValueError):
    """An area (bbox or GeoJSON polygon) or cell size that the cell grid cannot cut: malformed, empty, beyond
    the UTM latitudes, or a cell id that is not one."""


class InvalidDatesError(SrcubeError, ValueError):
    """The date range is malformed, reversed or entirely in the future."""


class InvalidOptionError(SrcubeError, TypeError):
    """An option name or value that run_region does not accept."""


class RegionTooLargeError(SrcubeError, ValueError):
    """The output grid of the request exceeds ``max_pixels``; pass ``yes=True`` (CLI ``--yes``) to run it."""


class UnknownCatalogError(SrcubeError, LookupError):
    """The catalog is neither a known profile name nor an http(s) URL."""


class UnknownCollectionError(SrcubeError, LookupError):
    """The catalog does not have the requested collection."""


class UnknownSensorError(SrcubeError, LookupError):
    """A sensor name that srcube has no profile for."""


class UnknownBandError(SrcubeError, LookupError):
    """A requested band is not in the sensor's band vocabulary, or not among an item's assets."""


class UnknownModelError(SrcubeError, models.UnknownModelError):
    """The model name is not registered."""


class UnsupportedScaleError(SrcubeError, models.UnsupportedScaleError):
    """The model cannot super-resolve by the requested scale."""


class WeightsNotFoundError(SrcubeError, models.WeightsNotFoundError):
    """A model's weights file is missing (srcube never downloads weights)."""


class WeightsIntegrityError(SrcubeError, models.WeightsIntegrityError):
    """A weights file does not match its recorded sha256."""


class IncompatibleWeightsError(SrcubeError, models.IncompatibleWeightsError):
    """Weights trained for other bands or another scale."""


class UntrainedWeightsError(SrcubeError, models.UntrainedWeightsError):
    """Weights marked untrained, used without allow_untrained=True."""


class ModelConfigError(SrcubeError, models.ModelConfigError):
    """Weights metadata (or a config) asks for an architecture beyond srcube's limits; nothing is allocated."""


class OnnxExportError(SrcubeError, models.OnnxExportError):
    """A model cannot be exported to ONNX (the message says why), its exported graph does not give the torch
    result in onnxruntime, or an .onnx file given to engine="onnx" is not one srcube exported."""


class OnnxUnavailableError(SrcubeError, models.OnnxUnavailableError):
    """ONNX export or engine="onnx" without the onnx extra (onnx, onnxscript, onnxruntime) installed."""


def as_pipeline_error(exc: models.ModelError) -> SrcubeError:
    """The pipeline's typed twin of a model-layer error (same message)."""
    for cls in (UnknownModelError, UnsupportedScaleError, WeightsNotFoundError, WeightsIntegrityError,
                IncompatibleWeightsError, UntrainedWeightsError, ModelConfigError, OnnxExportError,
                OnnxUnavailableError):
        if isinstance(exc, cls.__mro__[2]):
            return cls(str(exc))
    return SrcubeError(str(exc))


# --- search and data -------------------------------------------------------------------------


class CatalogUnavailableError(SrcubeError, ConnectionError):
    """The STAC API (or its token endpoint) could not be reached, answered with an error, or gave no complete
    answer within the timeout, also after the retries."""


class NotAStacApiError(SrcubeError, ValueError):
    """The catalog URL answers, but not as a STAC API (a web page, JSON that is not STAC, a static catalog):
    a wrong URL, so it is not retried."""


class EmptySearchError(SrcubeError, LookupError):
    """The search matched no items."""


class AllCloudyError(SrcubeError, LookupError):
    """Every frame in the stack is below the clear-fraction threshold."""


class AssetError(SrcubeError, ValueError):
    """Assets of the found items cannot be used (missing, corrupt, wrong CRS, no data)."""


class AssetAuthError(SrcubeError, PermissionError):
    """Reading assets needs credentials that are missing, or the server refused them (after a renewal)."""


class ClusterStartError(SrcubeError, RuntimeError):
    """The Dask cluster for the run could not be started (the message says what to change)."""


class StoreLockedError(SrcubeError, RuntimeError):
    """Another run is writing the same output (its lock is held)."""


class DeviceMemoryError(SrcubeError, MemoryError):
    """The device ran out of memory for a tile even after halving its batch and splitting it down to the
    smallest piece (the message names the tile, the batch, the margin and the free memory)."""


class InvalidDataError(SrcubeError, ValueError):
    """An array handed to srcube lacks what it needs (dims, CRS, finite values)."""


# --- output ----------------------------------------------------------------------------------


class OutputExistsError(SrcubeError, FileExistsError):
    """The output path holds something that srcube must not overwrite."""


class NotACubeError(OutputExistsError):
    """The output path exists and is not an srcube cube (srcube never overwrites foreign data)."""


class OutputNotWritableError(SrcubeError, PermissionError):
    """The output path cannot be written: a file is in the way, the folder is read-only, or the object store
    refuses (no credentials, no such bucket, access denied)."""


class OutputUnreachableError(SrcubeError, ConnectionError):
    """The output's object store did not answer (a dead or wrong endpoint, no network), checked before the
    search."""


class DiskFullError(SrcubeError, OSError):
    """The disk (or quota) of the output filled up while writing: the cube is left incomplete with what was
    written, and the same run resumes it once space is freed."""


class CubeAttributeError(SrcubeError, ValueError):
    """A cube's attribute or STAC document holds an id, hash or link that srcube refuses to turn into a file
    name or URL (not a plain name, or leading out of the cube's folders): cubes are shared, their attributes
    are checked like requests."""


class IncompleteCubeError(SrcubeError, RuntimeError):
    """The cube was not finished (it lacks ``complete = true``)."""


class CorruptCubeError(SrcubeError, OSError):
    """Stored chunks of a complete cube are missing, truncated or fail their crc32c checksum; ``srcube verify
    CUBE`` lists them by date and tile and ``--repair`` rewrites them from the cube's recorded request."""


class UnverifiableCubeError(SrcubeError, ValueError):
    """The cube's chunks carry no checksums (written before srcube stored crc32c with each chunk, or not by
    srcube), so a damaged chunk cannot be told from a good one; write it again to get checked bytes."""


class RepairError(SrcubeError, RuntimeError):
    """``srcube verify --repair`` cannot rewrite the damaged chunks from the cube's recorded request (none
    recorded, damaged metadata, a cube grown by appends, or the request now makes another cube)."""


class CubeMismatchError(SrcubeError, ValueError):
    """``mode="append"``: the request would not make the existing cube's kind of cube (grid, bands, model,
    scale, mode); the message names what differs."""


class PublishError(SrcubeError, RuntimeError):
    """``srcube publish``: the STAC API cannot be reached, does not take transactions, or refused a document;
    the message names the request, the answer and what to change."""


# --- warnings --------------------------------------------------------------------------------


class GeorefMismatchWarning(SrcubeWarning):
    """An item's proj:shape/proj:transform disagree with the asset file; the file wins."""


class AssetsExcludedWarning(SrcubeWarning):
    """Some items were left out because their assets cannot be used (listed in the cube)."""


class HarmonizationWarning(SrcubeWarning):
    """An item's reflectance offset could not be verified from its pixels, or the pixels contradicted the
    catalog's rule (the pixels win); the cube's ``frames`` attribute records what was applied and why."""


class StaleLockWarning(SrcubeWarning):
    """A lock left by a dead run (its process gone or its heartbeat old) was taken over."""


class FramesDroppedWarning(SrcubeWarning):
    """Some frames were dropped because they were not clear enough."""


# --- what is worth retrying ----------------------------------------------------------------------

#: OSErrors that say something about the request, not about the weather on the network
_PERMANENT_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
#: exception class names of optional libraries (matched by name: no import needed) that are transient
_TRANSIENT_NAMES = {"RasterioIOError", "ClientError", "ClientConnectionError", "ServerDisconnectedError",
                    "EndpointConnectionError", "ReadTimeoutError", "ConnectTimeoutError", "ChunkedEncodingError",
                    "ConnectionClosedError", "SlowDown", "ServiceUnavailable", "APIError", "CommClosedError"}


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the step that raised ``exc`` may succeed: network, catalog and object-store
    trouble yes; bad input, missing weights, all-cloudy stacks, model bugs no. Follows ``__cause__``."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, CatalogUnavailableError):
            return True
        if isinstance(cur, SrcubeError):
            return False
        if isinstance(cur, (TimeoutError, ConnectionError)):
            return True
        if isinstance(cur, OSError) and cur.errno in DISK_FULL_ERRNOS:  # full until someone frees space
            return False
        if isinstance(cur, OSError) and not isinstance(cur, _PERMANENT_OS_ERRORS):
            return True
        if any(c.__name__ in _TRANSIENT_NAMES for c in type(cur).__mro__):
            status = getattr(cur, "status_code", None) or getattr(cur, "status", None)
            return not (isinstance(status, int) and 400 <= status < 500 and status not in (408, 429))
        cur = cur.__cause__ or cur.__context__
    return False


# --- a full disk -----------------------------------------------------------------------------------

#: errno values of a full disk or an exhausted quota
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(exc: BaseException) -> OSError | None:
    """The OSError in ``exc`` or its causes that says the disk or the quota is full, or None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and not isinstance(cur, SrcubeError) and cur.errno in DISK_FULL_ERRNOS:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def _free_space(out: str) -> str:
    """How much space the disk of the local output ``out`` has left, as text ('' for object stores)."""
    if "://" in out and not out.startswith("file://"):
        return ""
    folder = os.path.abspath(out.removeprefix("file://"))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f" ({free / 1e6:,.1f} MB free there now)"


@contextlib.contextmanager
def disk_full_is_typed(out: str, needed: Callable[[], int | None] = lambda: None) -> Iterator[None]:
    """Raise :class:`DiskFullError` where the block writing the cube at ``out`` fills the disk (ENOSPC, EDQUOT,
    from this process or a worker), saying that the cube is incomplete and resumable and what to free.
    ``needed``: the cube's size in bytes, uncompressed, when known."""
    try:
        yield
    except SrcubeError:
        raise
    except Exception as exc:
        full = disk_full(exc)
        if full is None:
            raise
        size = needed()
        whole = f"; the whole cube takes at most {size / 1e6:,.1f} MB uncompressed" if size else ""
        raise DiskFullError(
            f"the disk is full: writing {out} stopped with {full}. The cube is incomplete (or, for an append, its "
            "new dates are not in it yet) and every chunk written so far is kept. Free space on the disk of "
            f"{out}{_free_space(out)}{whole}, or choose an output on a larger disk, then run the same request "
            "again: it resumes and writes only the missing chunks"
        ) from exc
