"""ONNX Runtime adapter for patch models (WSI classifier and segmenter).

The adapter fixes the contract between a model bundle's ``input`` spec and an ONNX graph:

* input: ``NCHW`` float32 RGB, named ``spec["input_name"]``; the adapter converts a batch of
  ``(N, H, W, 3)`` uint8 patches to ``((x / 255) - mean) / std``;
* output ``spec["output_name"]``: tumour probability, ``(N,)`` or ``(N, 1)`` for a
  classifier, ``(N, 1, H', W')`` (or ``(N, H', W')``) for a segmenter; the adapter returns
  ``(N,)`` or ``(N, H', W')`` float32.

The graph is checked against the spec when the session is built, so a wrong bundle fails at
start-up with a :class:`~dicomnode.errors.ModelError` that names the file and the mismatch,
not in the middle of a job. ``onnxruntime`` is imported here only.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from dicomnode.errors import ModelError

__all__ = ["OnnxModel", "is_available", "select_providers"]

logger = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
_REQUIRED_SPEC = ("input_name", "output_name", "mpp", "patch_size", "mean", "std")


def is_available() -> bool:
    """Whether ONNX Runtime (``onnxruntime`` or ``onnxruntime-gpu``) can be imported."""
    return importlib.util.find_spec("onnxruntime") is not None


def _ort() -> Any:
    if not is_available():
        raise ModelError(
            "ONNX Runtime is not installed: the WSI pipeline needs it "
            "(pip install 'onnxruntime>=1.31,<2', or onnxruntime-gpu for CUDA)"
        )
    import onnxruntime

    return onnxruntime


def select_providers(preferred: Sequence[str] = DEFAULT_PROVIDERS) -> list[str]:
    """Return the execution providers of ``preferred`` that this ONNX Runtime build offers.

    Parameters
    ----------
    preferred
        Provider names in order of preference.

    Returns
    -------
    list[str]
        ``preferred`` filtered through ``onnxruntime.get_available_providers()``, order
        kept; ``["CPUExecutionProvider"]`` when none of them is available.
    """
    available = set(_ort().get_available_providers())
    chosen = [p for p in preferred if p in available]
    if not chosen:
        logger.warning(
            "none of the providers %s is available (have %s); using CPUExecutionProvider",
            list(preferred),
            sorted(available),
        )
        chosen = ["CPUExecutionProvider"]
    return chosen


def _check_spec(path: Path, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the keys the adapter needs; return a normalised copy."""
    missing = [k for k in _REQUIRED_SPEC if k not in spec]
    if missing:
        raise ModelError(f"{path.name}: input spec lacks key(s) {', '.join(missing)}")
    out = dict(spec)
    for key in ("mean", "std"):
        vals = spec[key]
        if not isinstance(vals, Sequence) or len(vals) != 3:
            raise ModelError(f"{path.name}: spec '{key}' must be 3 numbers (RGB), got {vals!r}")
        out[key] = np.asarray([float(v) for v in vals], dtype=np.float32)
    if np.any(out["std"] <= 0):
        raise ModelError(f"{path.name}: spec 'std' must be positive, got {spec['std']!r}")
    if int(spec["patch_size"]) <= 0 or float(spec["mpp"]) <= 0:
        raise ModelError(f"{path.name}: spec 'patch_size' and 'mpp' must be positive")
    out["patch_size"], out["mpp"] = int(spec["patch_size"]), float(spec["mpp"])
    return out


def _check_graph(path: Path, session: Any, spec: Mapping[str, Any]) -> None:
    """Compare the session's input/output with the spec; raise ModelError on a mismatch."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    name, size = spec["input_name"], spec["patch_size"]
    if name not in inputs:
        raise ModelError(f"{path.name}: graph has no input '{name}' (inputs: {sorted(inputs)})")
    if spec["output_name"] not in outputs:
        raise ModelError(f"{path.name}: graph has no output '{spec['output_name']}' (outputs: {outputs})")
    node = inputs[name]
    if node.type != "tensor(float)":
        raise ModelError(f"{path.name}: input '{name}' is {node.type}, expected tensor(float)")
    shape = list(node.shape)
    want = [None, 3, size, size]
    if len(shape) != 4 or any(
        isinstance(got, int) and exp is not None and got != exp for got, exp in zip(shape, want, strict=True)
    ):
        raise ModelError(
            f"{path.name}: input '{name}' has shape {shape}, spec expects "
            f"[batch, 3, {size}, {size}] (NCHW RGB, patch_size {size})"
        )


class OnnxModel:
    """An ONNX patch model loaded once and called many times.

    Parameters
    ----------
    path
        The ``.onnx`` file (usually ``bundle.path(spec["file"])``).
    spec
        The model's input spec from ``model.yaml``: ``input_name``, ``output_name``,
        ``mpp``, ``patch_size``, ``mean``, ``std`` (more keys are kept and ignored).
    providers
        Execution providers in order of preference; default CUDA then CPU, filtered
        through what this ONNX Runtime build offers.
    intra_op_threads
        Threads per operator (the core count is right on CPU).

    Raises
    ------
    ModelError
        The file is missing or not a loadable ONNX graph, or its input/output names, input
        shape or dtype do not match the spec.
    """

    def __init__(
        self,
        path: Path,
        spec: Mapping[str, Any],
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 2,
    ) -> None:
        ort = _ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"ONNX model file {self.path} not found")
        self._spec = _check_spec(self.path, spec)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # no busy-waiting between calls: the tile reader threads need those cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        chosen = select_providers(providers if providers is not None else DEFAULT_PROVIDERS)
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=chosen)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise ModelError(f"{self.path.name}: ONNX Runtime cannot load it: {exc}") from exc
        _check_graph(self.path, self._session, self._spec)
        logger.info("loaded %s: providers %s (asked %s)", self.path.name, self.providers, chosen)

    @property
    def spec(self) -> Mapping[str, Any]:
        """The validated spec (``mean``/``std`` as float32 arrays, read-only view)."""
        return MappingProxyType(self._spec)

    @property
    def mpp(self) -> float:
        """µm/px the model's input patches are read at."""
        return float(self._spec["mpp"])

    @property
    def patch_size(self) -> int:
        """Edge of the square input patch in pixels."""
        return int(self._spec["patch_size"])

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses (``session.get_providers()``)."""
        return list(self._session.get_providers())

    def _to_input(self, batch: np.ndarray) -> np.ndarray:
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8:
            kind = getattr(batch, "dtype", type(batch).__name__)
            raise ModelError(f"{self.path.name}: expects a uint8 RGB batch, got {kind}")
        size = self.patch_size
        if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
            raise ModelError(
                f"{self.path.name}: batch shape {batch.shape} does not match the spec (N, {size}, {size}, 3)"
            )
        x = (batch.astype(np.float32) / np.float32(255.0) - self._spec["mean"]) / self._spec["std"]
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def predict(self, batch_rgb_uint8: np.ndarray) -> np.ndarray:
        """Run the model on a batch of patches.

        Parameters
        ----------
        batch_rgb_uint8
            ``(N, patch_size, patch_size, 3)`` uint8 RGB.

        Returns
        -------
        numpy.ndarray
            float32 tumour probabilities: ``(N,)`` for a classifier, ``(N, H', W')`` for
            a segmenter (channel axis squeezed).

        Raises
        ------
        ModelError
            Wrong dtype or shape of the batch, or an output of an unexpected shape.
        """
        x = self._to_input(batch_rgb_uint8)
        n = x.shape[0]
        if n == 0:  # run one blank patch to learn the output's shape
            return self.predict(np.zeros((1, *batch_rgb_uint8.shape[1:]), np.uint8))[:0]
        out = self._session.run([self._spec["output_name"]], {self._spec["input_name"]: x})[0]
        out = np.asarray(out, dtype=np.float32)
        if out.ndim in (1, 2) and out.size == n:
            return out.reshape(n)
        if out.ndim == 4 and out.shape[1] == 1:
            return out[:, 0]
        if out.ndim == 3 and out.shape[0] == n:
            return out
        raise ModelError(
            f"{self.path.name}: output '{self._spec['output_name']}' has shape {out.shape}; "
            "expected (N,), (N, 1) or (N, 1, H', W') probabilities"
        )
