"""Typed errors of the model layer (the pipeline re-raises them as its own typed errors)."""

from __future__ import annotations


class ModelError(Exception):
    """Base class of model errors."""


class UnknownModelError(ModelError, LookupError):
    """A model name that is neither a registered architecture nor shipped weights."""


class UnsupportedScaleError(ModelError, ValueError):
    """The model cannot upscale by the requested factor."""


class WeightsNotFoundError(ModelError, FileNotFoundError):
    """A weights file is missing; srcube never downloads weights."""


class WeightsIntegrityError(ModelError, ValueError):
    """The weights file does not match the sha256 its metadata (or the caller) expects."""


class IncompatibleWeightsError(ModelError, ValueError):
    """The weights were trained for other bands, another scale, or another architecture config."""


class UntrainedWeightsError(ModelError, ValueError):
    """The weights are marked untrained; they are only used when explicitly allowed."""


class ModelConfigError(ModelError, ValueError):
    """An architecture config beyond srcube's limits (a parameter, or the parameter count it builds), from
    weights metadata or a caller; refused before anything is allocated."""


class OnnxExportError(ModelError, RuntimeError):
    """A model that cannot be exported to ONNX (the message names the operation or behaviour the exporter
    refused), or whose exported graph does not give the torch result in onnxruntime; no file is left."""


class OnnxUnavailableError(ModelError, ImportError):
    """ONNX export or the onnxruntime engine was asked for without the ``onnx`` extra (onnx, onnxscript,
    onnxruntime) installed."""
