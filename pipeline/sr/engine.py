"""The tiled-map engine of srcube's inference: one way to run a model over georeferenced tiles on Dask.

Every inference in srcube (single-image :func:`~srcube.pipeline.sr.infer.super_resolve`, multi-frame
:func:`~srcube.pipeline.sr.infer.super_resolve_views`, band :func:`~srcube.pipeline.sr.sharpening.sharpen`)
is :func:`tiled_map`: its inputs (leading axes, then y, x) are cut into tiles of the input grid; each tile
borrows ``margin`` pixels from its neighbours (``dask.array.overlap``; none beyond the scene edge, where the
model sees the edge as a whole-image pass does); a block function runs the model once per tile and crops
its output back to ``scale x`` the tile's own extent (:func:`crop`, :func:`nodata`). With
``margin >= receptive_field`` the tiled result equals a whole-image pass. Models enter the graph as a
small ``ModelSpec`` and are built once per worker process (:func:`cached_model`), or, for a model object,
as one shared graph key (:func:`graph_model`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

import dask
import dask.array as da
import numpy as np
import torch

from srcube.models import ModelSpec, SRModel
from srcube.models.consistency import Projection
from srcube.pipeline.cluster import usable_cores
from srcube.pipeline.errors import DeviceMemoryError, InvalidOptionError
from srcube.pipeline.sr.onnxrt import OnnxGraph
from srcube.pipeline.sr.tiling import TileSpec, choose_tile, chunk_sizes, crop_bounds

BOUNDARIES = ("none", "reflect", "edge")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class InferenceSpec:
    """How each tile task runs: borrowed margin, scale, torch threads, scene-edge handling, precision.

    ``boundary="none"``: at the scene edge the model sees the edge as a whole-image pass does (its
    own zero padding), so tiled == whole image. ``"reflect"``/``"edge"``: the scene is padded by the
    margin first (numpy modes), as a whole-image pass on the padded scene would be.
    ``precision``: ``"bf16"``/``"fp16"`` autocast (fp16 runs as bf16 on a CPU, which has no fp16
    convolutions); ``"fp32"`` otherwise. ``projection``: the consistency projection applied to each tile
    (in fp32, before cropping), or None.
    """

    margin: int
    scale: int
    threads: int = 1
    boundary: str = "none"
    precision: str = "fp32"
    #: torch threads per task on each worker host, where known (see :func:`host_threads`)
    per_host: tuple[tuple[str, int], ...] = ()
    projection: Projection | None = None
    #: context pixels beyond the region that the edge tiles hold on their outer sides (cropped)
    halo: int = 0
    #: core size of one forward pass's tile (0: per device, :func:`pass_tile`)
    pass_tile: int = 0
    #: items (frames x pass tiles) per forward pass (0: 1 on a CPU, from the free memory on CUDA)
    batch: int = 0

    def __post_init__(self) -> None:
        if self.boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {self.boundary!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.margin < 0 or self.scale < 1 or self.threads < 1 or self.pass_tile < 0 or self.batch < 0:
            raise ValueError(f"bad inference spec {self}")

    def threads_here(self) -> int:
        """Torch threads for a task in this process: the value for this worker's host, else ``threads``."""
        if self.per_host:
            with contextlib.suppress(ImportError, ValueError):
                from distributed import get_worker

                host = _host(get_worker().address)
                return dict(self.per_host).get(host, self.threads)
        return self.threads

    def autocast(self, device: str) -> Any:
        if self.precision == "fp32":
            return torch.autocast(device, enabled=False)
        dtype = torch.float16 if self.precision == "fp16" and device == "cuda" else torch.bfloat16
        return torch.autocast(device, dtype=dtype)

    def pad_edges(self, x: np.ndarray, sides: tuple[int, int, int, int]
                  ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """Pad the sides that lie on the scene edge (margin 0) when boundary is reflect/edge."""
        if self.boundary == "none" or not self.margin:
            return x, sides
        top, bottom, left, right = sides
        pads = [self.margin if v == 0 else 0 for v in sides]
        width = [(0, 0)] * (x.ndim - 2) + [(pads[0], pads[1]), (pads[2], pads[3])]
        padded = np.pad(x, width, mode="symmetric") if self.boundary == "reflect" else np.pad(x, width, mode="edge")
        return padded, (top + pads[0], bottom + pads[1], left + pads[2], right + pads[3])


_MODEL_CACHE: dict[tuple[ModelSpec, str], SRModel] = {}
_CACHE_LOCK = threading.Lock()


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cached_model(spec: ModelSpec, device: str) -> SRModel:
    """The model of ``spec`` on ``device``, built once per process."""
    key = (spec, device)
    with _CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = spec.build().to(device)
            _MODEL_CACHE[key] = model
        return model


class TileModel(Protocol):
    """What the engine runs over a tile: a torch model, or the runner of an exported graph (``engine="onnx"``,
    :class:`~srcube.pipeline.sr.onnxrt.OnnxRunner`)."""

    @property
    def tile_local(self) -> bool: ...

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor: ...


def graph_model(ref: ModelSpec | SRModel | OnnxGraph) -> Any:
    """What a model is in the graph: its (small, hashable) spec, or the object as one shared key."""
    return ref if isinstance(ref, ModelSpec) else dask.delayed(ref, pure=True, traverse=False)


@overload
def tile_context(ref: ModelSpec | SRModel, spec: InferenceSpec, block_info: dict[Any, Any]
                 ) -> tuple[SRModel, str, tuple[int, int, int, int]]: ...


@overload
def tile_context(ref: ModelSpec | SRModel | OnnxGraph, spec: InferenceSpec, block_info: dict[Any, Any]
                 ) -> tuple[TileModel, str, tuple[int, int, int, int]]: ...


def tile_context(ref: ModelSpec | SRModel | OnnxGraph, spec: InferenceSpec, block_info: dict[Any, Any]
                  ) -> tuple[TileModel, str, tuple[int, int, int, int]]:
    """The worker's model on its device, and the (top, bottom, left, right) margins this tile carries."""
    loc, num = block_info[0]["chunk-location"], block_info[0]["num-chunks"]
    top, bottom = crop_bounds(loc[-2], num[-2], spec.margin, spec.halo)
    left, right = crop_bounds(loc[-1], num[-1], spec.margin, spec.halo)
    device = _device()
    model: TileModel
    if isinstance(ref, OnnxGraph):  # engine="onnx": the graph's onnxruntime session, one per process
        model = ref.runner(device, spec.threads_here())
    else:
        model = cached_model(ref, device) if isinstance(ref, ModelSpec) else ref.to(device).eval()
    if device == "cpu":
        torch.set_num_threads(spec.threads_here())
    else:
        exact_cuda(spec.precision == "fp32")
    return model, device, (top, bottom, left, right)


def exact_cuda(exact: bool = True) -> None:
    """fp32 on CUDA as the tests check it: no TF32 in matmuls and convolutions, deterministic cuDNN
    algorithms (no autotuning), so a tiled result equals a whole-image pass there too. ``exact=False``
    (bf16/fp16 autocast) lets cuDNN autotune."""
    torch.backends.cuda.matmul.allow_tf32 = not exact
    torch.backends.cudnn.allow_tf32 = not exact
    torch.backends.cudnn.deterministic = exact
    torch.backends.cudnn.benchmark = not exact


#: the smallest core (pixels, per axis, without borrowed margins) a tile is split down to on device OOM
MIN_SPLIT_CORE = 16

#: per device: the largest overhead ((T + 2m) / T)^2 of a forward pass's tile, and its smallest and largest
#: core T. A task's tile is cut into pass tiles of this size (each borrowing ``margin`` of its neighbours, so
#: the result is the same). On a CPU small passes win: their activations stay in the caches. Measured on
#: this project's 2-core machine (s2-sisr-x4, margin 24, one thread): 8.1 us per output-core input pixel at
#: T=192 (overhead 1.56), 8.5 at 128, 8.8 at 256, 12.1 at 512, 12.2 at 672 (``bench/inference.py`` prints
#: the pass-tile sweep). A GPU wants large passes and few borrowed pixels.
PASS_TILE = {"cpu": (1.6, 128, 512), "cuda": (1.15, 512, 2048)}
#: tiles per forward pass on a CPU: batch 4 measured 1.5-2x slower per pixel than batch 1 there
CPU_BATCH = 1
#: the share of the device's free memory a batch may take (CUDA), the rest left for the allocator
BATCH_MEMORY_SHARE = 0.5
#: most tiles in one forward pass (CUDA)
MAX_BATCH = 64


def pass_tile(device: str, margin: int) -> int:
    """The core size (input pixels) of one forward pass's tile on ``device``, by :data:`PASS_TILE`."""
    over, smallest, largest = PASS_TILE.get(device, PASS_TILE["cuda"])
    return choose_tile(None, margin, smallest, over, largest)


@dataclass(frozen=True)
class _Window:
    """One pass tile along an axis: its core [start, stop) and the window read around it."""

    start: int
    stop: int
    lo: int  # window start (start - borrowed)
    hi: int  # window stop (stop + borrowed)


def _windows(n: int, core: int, margin: int) -> list[_Window]:
    out, at = [], 0
    for size in chunk_sizes(n, core, max(1, core // 2)):  # a short last piece joins the one before
        out.append(_Window(at, at + size, max(0, at - margin), min(n, at + size + margin)))
        at += size
    return out


def _ratio(a: np.ndarray, size_hw: tuple[int, int]) -> int:
    """How many times finer than the tile grid ``a``'s last two axes are (0: not a spatial input)."""
    r = a.shape[-2] // size_hw[0] if a.ndim >= 3 else 0
    return r if r and a.shape[-2:] == (size_hw[0] * r, size_hw[1] * r) else 0


_ITEM_BYTES: dict[tuple[int, tuple[int, ...], str], float] = {}


def forward(model: TileModel, device: str, spec: InferenceSpec, *arrays: np.ndarray) -> torch.Tensor:
    """``model`` over a tile's arrays on ``device``, in the spec's precision (fp32 out), as one pass over the
    whole tile would give.

    The tile is cut into pass tiles (``spec.pass_tile``, default per device: :func:`pass_tile`), each
    borrowing ``spec.margin`` pixels of its neighbours inside the tile; tiles of one shape go through the
    model several at a time (``spec.batch`` items per pass; default: 1 on a CPU, on CUDA as many as half
    the free device memory holds, measured on the first pass), one pinned host-to-device copy per batch.
    Arrays whose last two axes are ``r`` times the first's (a sharpener's guide) are cut ``r`` times larger;
    others (which views are present) go with every piece. A model that is not ``tile_local`` gets the
    whole tile in one pass. A device out-of-memory error is survived as :func:`forward_pass` says."""
    n = arrays[0].shape[0]
    if spec.batch and n > spec.batch:  # more frames than a pass may take: a few at a time (axis 0 of every array)
        return torch.cat([forward(model, device, spec, *(a[i : i + spec.batch] for a in arrays))
                          for i in range(0, n, spec.batch)])
    size_hw = (int(arrays[0].shape[-2]), int(arrays[0].shape[-1]))
    core = spec.pass_tile or pass_tile(device, spec.margin)
    ys, xs = _windows(size_hw[0], core, spec.margin), _windows(size_hw[1], core, spec.margin)
    if not model.tile_local or (len(ys) == 1 and len(xs) == 1):  # not tile_local: it fits itself to the tile
        return forward_pass(model, device, spec, *arrays)
    ratios = [_ratio(a, size_hw) for a in arrays]
    groups: dict[tuple[int, int], list[tuple[_Window, _Window]]] = {}
    for wy in ys:
        for wx in xs:
            groups.setdefault((wy.hi - wy.lo, wx.hi - wx.lo), []).append((wy, wx))
    s, out = spec.scale, None
    for shape, pieces in groups.items():
        key = (id(model), (*shape, *arrays[0].shape[1:-2]), device)
        at = 0
        while at < len(pieces):
            k = max(1, _batch_items(spec, device, n, key) // n)
            chunk = pieces[at : at + k]
            at += len(chunk)
            batch = [np.concatenate([a[..., wy.lo * r : wy.hi * r, wx.lo * r : wx.hi * r] for wy, wx in chunk])
                     if r else np.concatenate([a] * len(chunk)) for a, r in zip(arrays, ratios, strict=True)]
            measure = device == "cuda" and not spec.batch and key not in _ITEM_BYTES
            if measure:
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            y = forward_pass(model, device, spec, *batch)
            if measure:
                _ITEM_BYTES[key] = max(1.0, (torch.cuda.max_memory_allocated() - before) / (len(chunk) * n))
            if out is None:
                out = torch.empty((n, y.shape[1], size_hw[0] * s, size_hw[1] * s), dtype=y.dtype, device=y.device)
            for j, (wy, wx) in enumerate(chunk):
                piece = y[j * n : (j + 1) * n, :, (wy.start - wy.lo) * s : (wy.stop - wy.lo) * s,
                          (wx.start - wx.lo) * s : (wx.stop - wx.lo) * s]
                out[:, :, wy.start * s : wy.stop * s, wx.start * s : wx.stop * s] = piece
    assert out is not None
    return out


def _batch_items(spec: InferenceSpec, device: str, n: int, key: tuple[int, tuple[int, ...], str]) -> int:
    """Items (frames x pass tiles) per forward pass: the setting; 1 on a CPU; on CUDA, from the free
    memory and the peak memory per item measured on the first pass of this shape, ``key`` (one tile before
    that)."""
    if spec.batch:
        return spec.batch
    if device != "cuda":
        return CPU_BATCH
    per_item = _ITEM_BYTES.get(key)
    if per_item is None:
        return n  # the first pass: one tile, measured
    free, _ = torch.cuda.mem_get_info()
    return int(min(MAX_BATCH * n, max(n, BATCH_MEMORY_SHARE * free // per_item)))


def _to_device(a: np.ndarray, device: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device == "cuda":  # one pinned copy per batch, asynchronous to the host
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def forward_pass(model: TileModel, device: str, spec: InferenceSpec, *arrays: np.ndarray) -> torch.Tensor:
    """One pass of ``model`` over the arrays on ``device``, in the spec's precision (fp32 out).

    On a device out-of-memory error the pass is redone in pieces with the same result: the batch (axis 0
    of every array) is halved first, then the tile is split in two along its longer axis, each half
    borrowing ``spec.margin`` pixels of the other (as tiles do, so with ``margin >= receptive_field``
    the pieces join exactly), recursively down to cores of :data:`MIN_SPLIT_CORE` pixels; below that it
    is :class:`~srcube.pipeline.errors.DeviceMemoryError` naming the tile, batch and free memory."""
    try:
        with torch.inference_mode(), spec.autocast(device):
            return model(*(_to_device(a, device) for a in arrays)).float()
    except torch.cuda.OutOfMemoryError as exc:
        oom = exc
    if device == "cuda":
        torch.cuda.empty_cache()
    n = arrays[0].shape[0]
    if n > 1:
        h = n // 2
        return torch.cat([forward_pass(model, device, spec, *(a[:h] for a in arrays)),
                          forward_pass(model, device, spec, *(a[h:] for a in arrays))])
    size_hw = (int(arrays[0].shape[-2]), int(arrays[0].shape[-1]))
    axis = -2 if size_hw[0] >= size_hw[1] else -1
    size, m, s = size_hw[axis], spec.margin, spec.scale
    half = size // 2
    too_small = half - m < MIN_SPLIT_CORE // 2 or size - half < MIN_SPLIT_CORE // 2 or half + m >= size
    if too_small or not model.tile_local:  # a model fitted to its tile would give another result split
        raise DeviceMemoryError(
            f"the {device} device ran out of memory for one tile of {size_hw[0]} x {size_hw[1]} input pixels "
            f"(batch {n}, margin {m}) even split down to the smallest piece; free memory: "
            f"{_free_memory(device)}. Use a smaller tile (tile=, pass_tile=), frames_per_task=1, "
            f"precision='bf16', or a device with more memory") from oom

    def cut(a: np.ndarray, lo: int, hi: int) -> np.ndarray:
        r = _ratio(a, size_hw)
        if not r:
            return a  # not a spatial input (e.g. which views are present)
        index = [slice(None)] * a.ndim
        index[axis] = slice(lo * r, hi * r)  # a finer input (a sharpener's guide): r x as many pixels
        return a[tuple(index)]

    first = forward_pass(model, device, spec, *(cut(a, 0, half + m) for a in arrays))
    second = forward_pass(model, device, spec, *(cut(a, half - m, size) for a in arrays))
    first = first.narrow(axis, 0, half * s)
    second = second.narrow(axis, m * s, (size - half) * s)
    return torch.cat([first, second], dim=axis)


def _free_memory(device: str) -> str:
    if device != "cuda":
        return "unknown"
    free, total = torch.cuda.mem_get_info()
    return f"{free / 2**30:.2f} of {total / 2**30:.2f} GiB"


def crop(y: np.ndarray, sides: tuple[int, int, int, int], scale: int) -> np.ndarray:
    """A tile's output without the output pixels of the input pixels it borrowed (``sides``)."""
    top, bottom, left, right = sides
    h, w = y.shape[-2:]
    return y[..., top * scale : h - bottom * scale, left * scale : w - right * scale]


def nodata(y: np.ndarray, valid: np.ndarray, sides: tuple[int, int, int, int], scale: int) -> np.ndarray:
    """NaN in ``y`` (n, band, Y, X: a cropped output) on the output pixels of the input pixels where
    ``valid`` (n, y, x: the input tile with its borrowed sides) is False."""
    top, bottom, left, right = sides
    valid = valid[:, top : valid.shape[-2] - bottom, left : valid.shape[-1] - right]
    if valid.all():
        return y
    invalid = ~np.repeat(np.repeat(valid, scale, axis=-2), scale, axis=-1)
    return np.where(invalid[:, None], np.float32(np.nan), y)


@dataclass(frozen=True)
class TiledInput:
    """One input of :func:`tiled_map`: an array (leading axes, then y, x), the chunks of its leading axes
    (``-1``: whole), and ``ratio``: its grid is that many times finer than the tile grid (a guide's 10 m
    pixels under 20 m tiles), so its tiles and borrowed margins are ``ratio`` times larger."""

    data: da.Array
    lead: tuple[Any, ...]
    ratio: int = 1


def tiled_map(block: Callable[..., np.ndarray], inputs: Sequence[TiledInput], args: Sequence[Any], *,
              tiles: TileSpec, out_lead: Sequence[int | tuple[int, ...]], name: str,
              resources: dict[str, float] | None = None, drop_axis: int | None = None) -> da.Array:
    """``block(*input_tiles, *args, block_info=...)`` over the tiles of ``inputs``: float32, lazily.

    The tile grid is that of the first input's last two axes (``tiles.chunks``); margins are borrowed
    only along axes that have neighbouring tiles. ``out_lead`` gives the output's leading chunks: an int
    copies that axis of the first (cut) input, a tuple is taken as it is; the output's y/x chunks are
    ``tiles.out_chunks``. ``resources`` annotates the tasks (compute with ``optimize_graph=False``:
    blockwise fusion drops annotations). ``name`` prefixes a key unique to inputs and arguments.
    """
    ny, nx = inputs[0].data.shape[-2:]
    yc, xc = tiles.chunks(ny), tiles.chunks(nx)
    borrow = (tiles.margin if len(yc) > 1 else 0, tiles.margin if len(xc) > 1 else 0)
    cut = []
    for inp in inputs:
        r = inp.ratio
        a = inp.data.rechunk((*inp.lead, tuple(c * r for c in yc), tuple(c * r for c in xc)))
        if any(borrow):
            depth = {i: 0 for i in range(a.ndim - 2)} | {a.ndim - 2: r * borrow[0], a.ndim - 1: r * borrow[1]}
            a = da.overlap.overlap(a, depth=depth, boundary="none")
        cut.append(a)
    lead = tuple(cut[0].chunks[o] if isinstance(o, int) else tuple(o) for o in out_lead)
    chunks = (*lead, tiles.out_chunks(ny), tiles.out_chunks(nx))
    with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
        return da.map_blocks(block, *cut, *args, chunks=chunks, drop_axis=drop_axis, dtype=np.float32,
                             meta=np.empty((0,) * len(chunks), np.float32),
                             # unique per input and model (a fixed name would make two arrays share keys)
                             name=f"{name}-{dask.base.tokenize(*cut, *args)}")


def materialise(result: Any, lazy: bool, client: Any | None, resources: dict[str, float] | None) -> Any:
    """``result`` as it is for lazy inputs; computed here (on ``client`` if given) for in-memory ones."""
    if lazy:
        return result
    opt = {"optimize_graph": False} if resources else {}
    return client.compute(result, **opt).result() if client is not None else result.compute(**opt)


def _host(address: str) -> str:
    from urllib.parse import urlparse

    return urlparse(address).hostname or address


def host_threads(client: Any) -> tuple[tuple[str, int], ...]:
    """Torch threads per task for each worker host: the cores the host's workers may use, shared
    among all the Dask threads running there (several worker processes of a LocalCluster share
    one machine; a Kubernetes worker pod has its CPU limit)."""
    nthreads = client.nthreads()
    cores = client.run(usable_cores)
    per_host_threads: dict[str, int] = {}
    per_host_cores: dict[str, int] = {}
    for address, n in nthreads.items():
        host = _host(address)
        per_host_threads[host] = per_host_threads.get(host, 0) + int(n)
        # worker processes on one host see the same machine; their limits do not add up
        per_host_cores[host] = max(per_host_cores.get(host, 1), int(cores.get(address, 1)))
    return tuple(sorted((h, max(1, per_host_cores[h] // max(1, t))) for h, t in per_host_threads.items()))


def default_threads(client: Any | None) -> int:
    """Torch CPU threads per task where the worker's host is unknown: the cores left for each Dask
    thread of the cluster (at least one)."""
    if client is None:
        return 1  # the threaded scheduler already runs one task per core
    total = sum(client.nthreads().values()) or 1
    return max(1, usable_cores() // total)


def checked_pass_tile(pass_tile: int | None) -> int | None:
    """``pass_tile`` checked (None: per device)."""
    if pass_tile is None:
        return None
    if isinstance(pass_tile, bool) or not isinstance(pass_tile, (int, np.integer)) or pass_tile < 16:
        raise InvalidOptionError(f"pass_tile must be an integer >= 16 (input pixels), got {pass_tile!r}")
    return int(pass_tile)


def checked_batch(batch: int | None) -> int | None:
    """``batch`` checked (None: per device)."""
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
        raise InvalidOptionError(f"batch must be an integer >= 1 (items per forward pass), got {batch!r}")
    return batch


def inference_spec(client: Any | None, torch_threads: int | None, margin: int, scale: int, boundary: str,
                   precision: str, projection: Projection | None = None, halo: int = 0, *,
                   pass_tile: int | None = None, batch: int | None = None) -> InferenceSpec:
    """The tile tasks' spec: torch threads as given, else per worker host (fallback: cluster-wide);
    ``pass_tile`` and ``batch`` as given, else chosen on the worker for its device (see :func:`forward`)."""
    per_host = host_threads(client) if client is not None and torch_threads is None else ()
    threads = torch_threads if torch_threads is not None else default_threads(client)
    return InferenceSpec(margin, scale, threads, boundary, precision, per_host, projection, halo,
                         pass_tile=int(pass_tile or 0), batch=int(batch or 0))
