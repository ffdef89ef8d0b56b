"""Validated settings and model spec of the ``wsi-two-stage`` pipeline.

The model spec comes from the bundle manifest (``input.classifier``, ``input.segmenter``,
``thresholds``); run-time knobs (providers, threads, dense mode ...) come from the route's
pipeline settings. Both are checked once, in ``create``, so a job never fails on a typo.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dicomnode.errors import ConfigError, ModelError
from dicomnode.inference.manifest import ModelBundle

__all__ = ["ModelSpec", "Thresholds", "WsiSettings", "model_spec", "thresholds"]


@dataclass(frozen=True)
class ModelSpec:
    """One ONNX model of the bundle.

    Attributes
    ----------
    raw
        The manifest section as written (handed to ``OnnxModel``).
    file
        Model file, relative to the bundle.
    mpp, patch_size
        Input resolution (µm/px) and square patch side (px).
    output_mpp
        Output resolution of a segmenter (µm/px); ``None`` for the classifier.
    """

    raw: Mapping[str, Any]
    file: str
    mpp: float
    patch_size: int
    output_mpp: float | None = None


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds from the manifest."""

    gate_probability: float
    tumour_probability: float
    itc_max_mm: float
    micro_max_mm: float
    heatmap_bands: tuple[float, float, float]


def _number(section: Mapping[str, Any], key: str, where: str) -> float:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ModelError(f"model manifest: {where}.{key} must be a number > 0, got {value!r}")
    return float(value)


def model_spec(bundle: ModelBundle, name: str) -> ModelSpec:
    """Parse ``input.<name>`` of a wsi-two-stage bundle.

    Raises
    ------
    ModelError
        The section or one of its keys is missing or invalid.
    """
    section = (bundle.input or {}).get(name)
    where = f"input.{name}"
    if not isinstance(section, Mapping):
        raise ModelError(f"model '{bundle.id}': manifest needs a mapping '{where}'")
    if "file" not in section:
        raise ModelError(f"model '{bundle.id}': {where}.file is missing")
    bundle.path(str(section["file"]))  # listed (and hash-checked) in files
    patch = _number(section, "patch_size", where)
    if patch != int(patch):
        raise ModelError(f"model '{bundle.id}': {where}.patch_size must be an integer")
    output = _number(section, "output_mpp", where) if name == "segmenter" else None
    return ModelSpec(section, str(section["file"]), _number(section, "mpp", where), int(patch), output)


def thresholds(bundle: ModelBundle) -> Thresholds:
    """Parse ``thresholds`` of a wsi-two-stage bundle.

    Raises
    ------
    ModelError
        A key is missing or out of range.
    """
    t = bundle.thresholds or {}
    probs = {k: _number(t, k, "thresholds") for k in ("gate_probability", "tumour_probability")}
    sizes = {k: _number(t, k, "thresholds") for k in ("itc_max_mm", "micro_max_mm")}
    bands = t.get("heatmap_bands")
    if (
        not isinstance(bands, Sequence)
        or len(bands) != 3
        or not all(isinstance(b, int | float) for b in bands)
        or not 0 < bands[0] < bands[1] < bands[2] < 1
    ):
        raise ModelError(
            f"model '{bundle.id}': thresholds.heatmap_bands must be three increasing probabilities, got {bands!r}"
        )
    if any(p >= 1 for p in probs.values()) or sizes["itc_max_mm"] >= sizes["micro_max_mm"]:
        raise ModelError(f"model '{bundle.id}': thresholds out of range: {dict(t)}")
    return Thresholds(**probs, **sizes, heatmap_bands=(float(bands[0]), float(bands[1]), float(bands[2])))


@dataclass(frozen=True)
class WsiSettings:
    """Run-time settings of the pipeline (route ``settings``).

    Attributes
    ----------
    providers
        ONNX Runtime execution providers; ``None`` = ``select_providers()``.
    intra_op_threads
        ONNX Runtime intra-op threads per session.
    read_workers
        Threads reading/decoding tiles, pipelined with inference.
    batch_size, segmenter_batch_size
        Patches per model call.
    dense
        Run the segmenter on every tissue patch (no gate): the benchmark baseline.
    tissue_mpp
        Resolution of the tissue mask (µm/px).
    min_tissue_fraction
        A classifier patch is classified when at least this much of it is tissue.
    segmenter_margin
        Input pixels dropped at each side of a segmenter tile (overlap = 2 × margin);
        ``None`` = patch_size // 8.
    max_sr_deposits
        Deposit groups written to the SR (largest first).
    """

    providers: tuple[str, ...] | None = None
    intra_op_threads: int = 2
    read_workers: int = 2
    batch_size: int = 32
    segmenter_batch_size: int = 8
    dense: bool = False
    tissue_mpp: float = 8.0
    min_tissue_fraction: float = 0.05
    segmenter_margin: int | None = None
    max_sr_deposits: int = 50

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> WsiSettings:
        """Build from the route settings, naming any bad key.

        Raises
        ------
        ConfigError
            Unknown key or a value of the wrong type/range.
        """
        known = set(cls.__dataclass_fields__)
        values: dict[str, Any] = {}
        for key, value in settings.items():
            if key not in known:
                raise ConfigError(
                    f"settings.{key}",
                    value,
                    f"unknown wsi-two-stage setting; use one of {sorted(known)}",
                )
            values[key] = _coerce(key, value)
        return cls(**values)


def _coerce(key: str, value: Any) -> Any:
    if key == "providers":
        if value is None:
            return None
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"settings.{key}", value, "give a list of provider names")
        return tuple(value)
    if key == "dense":
        if not isinstance(value, bool):
            raise ConfigError(f"settings.{key}", value, "use true or false")
        return value
    if key == "segmenter_margin" and value is None:
        return None
    floats = {"tissue_mpp", "min_tissue_fraction"}
    kind = float if key in floats else int
    # zero is meaningful only for these (no margin, no SR deposit groups, no tissue floor)
    low = 0 if key in {"segmenter_margin", "max_sr_deposits", "min_tissue_fraction"} else 1
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < low
        or (kind is int and value != int(value))
        or (key == "min_tissue_fraction" and value > 1)
    ):
        what = "non-negative" if low == 0 else "positive"
        raise ConfigError(f"settings.{key}", value, f"use a {what} {kind.__name__}")
    return kind(value)
