"""Weights: ``NAME.safetensors`` + ``NAME.json`` metadata, checked on load, never downloaded.

The JSON sidecar says what the tensors are: architecture and config, scale, bands (``null`` for
band-agnostic models that take any band one at a time), input normalisation, receptive field,
whether and how they were trained (data, recipe, licence), metrics, and the sha256 of the
safetensors file. Loading verifies the hash, rebuilds the architecture, loads the tensors
strictly, and checks the request (scale, bands) against the metadata.

Weights that srcube ships live in ``models/weights/`` and are found by name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srcube.models.errors import (
    IncompatibleWeightsError,
    UntrainedWeightsError,
    WeightsIntegrityError,
    WeightsNotFoundError,
)

if TYPE_CHECKING:
    from srcube.models.base import SRModel

FORMAT = "srcube-weights/1"
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class Normalisation:
    """Affine input normalisation: the network sees ``(x - offset) / scale`` (per band or global)."""

    offset: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"normalisation scale must be positive, got {self.scale}")


@dataclass(frozen=True)
class WeightsMeta:
    name: str
    architecture: str
    config: dict[str, Any]
    scale: int
    bands: list[str] | None
    receptive_field: int
    trained: bool
    normalisation: Normalisation = field(default_factory=Normalisation)
    training: dict[str, Any] = field(default_factory=dict)  # data, recipe, licence, ...
    metrics: dict[str, Any] = field(default_factory=dict)
    licence: str = "Apache-2.0"
    sha256: str = ""
    created: str = ""
    srcube_version: str = ""
    format: str = FORMAT

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> WeightsMeta:
        if doc.get("format") != FORMAT:
            raise IncompatibleWeightsError(f"unknown weights metadata format {doc.get('format')!r}; expected {FORMAT}")
        data = dict(doc)
        data["normalisation"] = Normalisation(**data.get("normalisation", {}))
        known = set(cls.__dataclass_fields__)
        meta = cls(**{k: v for k, v in data.items() if k in known})
        # the metadata is untrusted input (weights are shared): the fields that decide what is built are checked
        # for type here, and the architecture's config against the registry's limits before anything is built
        if not isinstance(meta.config, dict) or not all(isinstance(k, str) for k in meta.config):
            raise TypeError(f"config must be an object of named parameters, got {meta.config!r}"[:200])
        if not isinstance(meta.architecture, str) or isinstance(meta.scale, bool) or not isinstance(meta.scale, int):
            raise TypeError(f"architecture must be a name and scale an integer, got {meta.architecture!r} and "
                            f"{meta.scale!r}"[:200])
        if meta.bands is not None and not (isinstance(meta.bands, list)
                                           and all(isinstance(b, str) for b in meta.bands)):
            raise TypeError(f"bands must be a list of band names or null, got {meta.bands!r}"[:200])
        return meta

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def save_weights(model: SRModel, path: str | Path, *, name: str | None = None, trained: bool,
                 training: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                 normalisation: Normalisation | None = None, licence: str = "Apache-2.0") -> WeightsMeta:
    """Write ``path.safetensors`` + ``path.json``. ``model`` is the bare architecture (not Normalized)."""
    from safetensors.torch import save_file

    from srcube.models.base import Normalized
    from srcube.models.registry import architecture_config

    if isinstance(model, Normalized):
        normalisation = normalisation or model.norm
        model = model.inner
    tensors_path, meta_path = _paths(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tensors_path), metadata={"format": FORMAT, "architecture": model.name})
    try:  # the installed distribution's version (models sits below the pipeline: it never imports it)
        version = importlib.metadata.version("srcube")
    except importlib.metadata.PackageNotFoundError:
        version = ""
    meta = WeightsMeta(
        name=name or tensors_path.stem, architecture=model.name, config=architecture_config(model),
        scale=model.scale, bands=list(model.bands) if model.bands else None,
        receptive_field=model.receptive_field, trained=trained,
        normalisation=normalisation or Normalisation(), training=dict(training or {}),
        metrics=dict(metrics or {}), licence=licence, sha256=sha256_file(tensors_path),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), srcube_version=version,
    )
    meta_path.write_text(json.dumps(meta.to_json(), indent=2) + "\n")
    return meta


def read_meta(path: str | Path) -> WeightsMeta:
    given = Path(path)
    if given.suffix not in ("", ".json", ".safetensors") and given.is_file():
        raise IncompatibleWeightsError(
            f"{given} is not srcube weights: srcube reads NAME.safetensors with its NAME.json metadata "
            "(models.save_weights writes both); convert the checkpoint with models.save_weights first")
    tensors_path, meta_path = _paths(path)
    for p in (meta_path, tensors_path):
        if not p.exists():
            raise WeightsNotFoundError(f"weights file {p} does not exist (srcube never downloads weights)")
    try:
        return WeightsMeta.from_json(json.loads(meta_path.read_text()))
    except (ValueError, TypeError) as exc:
        raise IncompatibleWeightsError(f"unreadable weights metadata {meta_path}: {exc}") from None


def stored_values(path: str | Path) -> int:
    """How many numbers a weights file holds: the sizes of its tensors, read from the safetensors header alone (8
    bytes of length, then JSON) without torch, so ``srcube models`` lists the shipped weights quickly. srcube's
    architectures keep their buffers out of the file: this is the weights' parameter count."""
    tensors_path, _ = _paths(path)
    try:
        with open(tensors_path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            data = f.read(min(size, 100 << 20))  # safetensors' own limit on a header
            if len(data) != size:
                raise ValueError(f"its header says {size} bytes, {len(data)} follow")
            header = json.loads(data)
        return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    except (OSError, struct.error, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise IncompatibleWeightsError(f"{tensors_path} is not a readable safetensors file ({exc}); export the "
                                       "weights with models.save_weights") from None


def check_compatible(meta: WeightsMeta, *, scale: int | None = None, bands: Sequence[str] | None = None) -> None:
    """Raise IncompatibleWeightsError unless the weights can serve this scale and these bands."""
    if scale is not None and scale != meta.scale:
        raise IncompatibleWeightsError(f"weights {meta.name!r} super-resolve x{meta.scale}, not x{scale}")
    if bands is not None and meta.bands is not None and list(bands) != list(meta.bands):
        raise IncompatibleWeightsError(
            f"weights {meta.name!r} were trained for bands {meta.bands} (in that order), not {list(bands)}")


def load_weights(path: str | Path, *, expected_sha256: str | None = None, scale: int | None = None,
                 bands: Sequence[str] | None = None, allow_untrained: bool = False) -> tuple[SRModel, WeightsMeta]:
    """The ready-to-run model (eval mode, normalisation included) and its metadata."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from srcube.models.base import Normalized
    from srcube.models.registry import build, parameter_shapes

    meta = read_meta(path)
    tensors_path, _ = _paths(path)
    digest = sha256_file(tensors_path)
    for want, what in ((meta.sha256, "its metadata"), (expected_sha256, "the caller")):
        if want and digest != want:
            raise WeightsIntegrityError(f"{tensors_path} has sha256 {digest[:16]}..., {what} expects "
                                        f"{want[:16]}...; the file is corrupt or was replaced")
    if not meta.trained and not allow_untrained:
        raise UntrainedWeightsError(f"weights {meta.name!r} are marked untrained ({meta.training.get('data', '')}); "
                                    "pass allow_untrained=True to use them anyway")
    check_compatible(meta, scale=scale, bands=bands)
    # what the metadata's architecture would hold, found without allocating it (bounded: ModelConfigError), must
    # be what the file holds (read from its header alone) before anything is built or read
    shapes = parameter_shapes(meta.architecture, **meta.config)
    try:
        with safe_open(str(tensors_path), "pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except SafetensorError as exc:
        raise IncompatibleWeightsError(f"{tensors_path} is not a readable safetensors file ({exc}); export the "
                                       "weights with models.save_weights") from None
    if stored != shapes:
        differ = sorted(k for k in set(stored) | set(shapes) if stored.get(k) != shapes.get(k))
        raise IncompatibleWeightsError(
            f"{tensors_path} does not fit architecture {meta.architecture} {meta.config}"[:400]
            + f": {len(differ)} tensor(s) differ in name or shape ({', '.join(differ[:5])}"
            + (", ..." if len(differ) > 5 else "") + "); the metadata and the tensors belong to different weights")
    model = build(meta.architecture, **meta.config)
    try:
        state = load_file(str(tensors_path))
    except SafetensorError as exc:
        raise IncompatibleWeightsError(f"{tensors_path} is not a readable safetensors file ({exc}); export the "
                                       "weights with models.save_weights") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise IncompatibleWeightsError(f"{tensors_path} does not fit architecture {meta.architecture} "
                                       f"{meta.config}: {exc}") from None
    out: SRModel = model if meta.normalisation == Normalisation() else Normalized(model, meta.normalisation)
    out.eval()
    out.weights_meta = meta  # type: ignore[assignment]
    return out, meta


def shipped_weights() -> dict[str, Path]:
    """Names of the weights that ship with srcube -> their metadata file.

    Only ``NAME.json`` files with their ``NAME.safetensors`` count: other JSON beside them (a test
    report such as ``NAME.test.json``) is not weights.
    """
    if not SHIPPED_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.json")) if p.with_suffix(".safetensors").is_file()}
