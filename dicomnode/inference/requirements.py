"""The input requirements a model bundle declares (``requirements:`` in ``model.yaml``).

A bundle says which inputs its model was made for; the pipeline's guard checks them
before inference and ends the job ``refused`` when one fails (see
``dicomnode/pipelines/guard.py``). The section is parsed strictly: every key is known,
typed and range-checked, and a mistake is a :class:`~dicomnode.errors.ModelError` naming
the key. ``modality`` picks the kind: ``MR`` (volumes) or ``SM`` (whole-slide images).

Each check yields a :class:`Verdict` (requirement, value found, value expected).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dicomnode.errors import ModelError

__all__ = ["MrRequirements", "Range", "Requirements", "Verdict", "WsiRequirements", "parse_requirements"]

PLANES = {"axial": (0.0, 0.0, 1.0), "coronal": (0.0, 1.0, 0.0), "sagittal": (1.0, 0.0, 0.0)}
ILLUMINATIONS = ("brightfield", "fluorescence")
#: Default spacing range as factors of the nnU-Net plans' spacing (per axis).
SPACING_DEFAULT = (0.25, 2.0)


@dataclass(frozen=True)
class Range:
    """A closed interval; ``None`` means unbounded on that side."""

    low: float | None = None
    high: float | None = None

    def __contains__(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.low is None:
            return f"≤ {self.high:g}" if self.high is not None else "any"
        return f"≥ {self.low:g}" if self.high is None else f"{self.low:g}–{self.high:g}"


@dataclass(frozen=True)
class Verdict:
    """One requirement checked against one input: what was found, what was expected."""

    requirement: str
    found: str
    expected: str
    passed: bool

    def __str__(self) -> str:
        return f"{self.requirement}: found {self.found}, expected {self.expected}"

    def to_json(self) -> dict[str, Any]:
        return {"requirement": self.requirement, "found": self.found, "expected": self.expected,
                "passed": self.passed}


@dataclass(frozen=True)
class MrWarn:
    """Margins beyond which an accepted MR input is flagged (not refused)."""

    tilt_deg: float = 10.0
    spacing_margin: float = 0.25
    intensity_z: float = 2.0


@dataclass(frozen=True)
class MrRequirements:
    """What an MR volume model needs (``modality: MR``)."""

    modality: str
    plane: str
    max_tilt_deg: float
    spacing_mm: Mapping[str, Range]
    plans_spacing_mm: tuple[float, float, float] | None = None
    min_slices: int = 1
    min_coverage_mm: float = 0.0
    fov_mm: Range = Range()
    header: Mapping[str, Range] = field(default_factory=dict)
    original_only: bool = False
    warn: MrWarn = MrWarn()


@dataclass(frozen=True)
class WsiRequirements:
    """What a whole-slide model needs (``modality: SM``)."""

    modality: str
    illumination: str
    base_mpp: Range = Range()
    photometric: tuple[str, ...] = ()
    min_tissue_mm2: float = 0.0


Requirements = MrRequirements | WsiRequirements

_MR_KEYS = {"modality", "plane", "max_tilt_deg", "spacing_mm", "min_slices", "min_coverage_mm", "fov_mm",
            "header", "original_only", "warn"}
_WSI_KEYS = {"modality", "illumination", "base_mpp", "photometric", "min_tissue_mm2"}


def _number(value: Any, key: str, where: str, *, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < low:
        raise ModelError(f"{where}: requirements.{key} must be a number ≥ {low:g}, got {value!r}")
    return float(value)


def _range(value: Any, key: str, where: str) -> Range:
    if not isinstance(value, list) or len(value) != 2:
        raise ModelError(f"{where}: requirements.{key} must be [low, high] (null for open), got {value!r}")
    low, high = (None if v is None else _number(v, key, where) for v in value)
    if low is not None and high is not None and low > high:
        raise ModelError(f"{where}: requirements.{key}: low {low:g} > high {high:g}")
    return Range(low, high)


def _unknown(data: Mapping[str, Any], known: set[str], prefix: str, where: str) -> None:
    extra = sorted(set(data) - known)
    if extra:
        raise ModelError(f"{where}: unknown key '{prefix}{extra[0]}' (known: {', '.join(sorted(known))})")


def _spacing(data: Any, plans: tuple[float, float, float] | None, where: str) -> dict[str, Range]:
    axes = ("slice", "row", "column")
    if data is None:
        if plans is None:
            return {}
        low, high = SPACING_DEFAULT
        return {axis: Range(round(s * low, 4), round(s * high, 4)) for axis, s in zip(axes, plans, strict=True)}
    if not isinstance(data, dict):
        raise ModelError(f"{where}: requirements.spacing_mm must map slice/row/column to [low, high]")
    _unknown(data, set(axes), "spacing_mm.", where)
    return {axis: _range(v, f"spacing_mm.{axis}", where) for axis, v in data.items()}


def _mr(data: Mapping[str, Any], plans: tuple[float, float, float] | None, where: str) -> MrRequirements:
    _unknown(data, _MR_KEYS, "", where)
    plane = str(data.get("plane", "axial"))
    if plane not in PLANES:
        raise ModelError(f"{where}: requirements.plane {plane!r} unknown; use one of {', '.join(PLANES)}")
    header = data.get("header") or {}
    if not isinstance(header, dict):
        raise ModelError(f"{where}: requirements.header must map DICOM keywords to [low, high]")
    warn = data.get("warn") or {}
    if not isinstance(warn, dict):
        raise ModelError(f"{where}: requirements.warn must be a mapping")
    _unknown(warn, {"tilt_deg", "spacing_margin", "intensity_z"}, "warn.", where)
    if not isinstance(data.get("original_only", False), bool):
        raise ModelError(f"{where}: requirements.original_only must be true or false")
    return MrRequirements(
        modality="MR", plane=plane, max_tilt_deg=_number(data.get("max_tilt_deg", 20.0), "max_tilt_deg", where),
        spacing_mm=_spacing(data.get("spacing_mm"), plans, where), plans_spacing_mm=plans,
        min_slices=int(_number(data.get("min_slices", 1), "min_slices", where, low=1)),
        min_coverage_mm=_number(data.get("min_coverage_mm", 0.0), "min_coverage_mm", where),
        fov_mm=_range(data["fov_mm"], "fov_mm", where) if "fov_mm" in data else Range(),
        header={str(k): _range(v, f"header.{k}", where) for k, v in header.items()},
        original_only=bool(data.get("original_only", False)),
        warn=MrWarn(**{k: _number(v, f"warn.{k}", where) for k, v in warn.items()}),
    )


def _wsi(data: Mapping[str, Any], where: str) -> WsiRequirements:
    _unknown(data, _WSI_KEYS, "", where)
    illumination = str(data.get("illumination", "brightfield"))
    if illumination not in ILLUMINATIONS:
        raise ModelError(f"{where}: requirements.illumination {illumination!r}; use one of {ILLUMINATIONS}")
    photometric = data.get("photometric") or []
    if not isinstance(photometric, list):
        raise ModelError(f"{where}: requirements.photometric must be a list, e.g. [RGB, YBR_FULL_422]")
    return WsiRequirements(
        modality="SM", illumination=illumination,
        base_mpp=_range(data["base_mpp"], "base_mpp", where) if "base_mpp" in data else Range(),
        photometric=tuple(str(p) for p in photometric),
        min_tissue_mm2=_number(data.get("min_tissue_mm2", 0.0), "min_tissue_mm2", where),
    )


def parse_requirements(data: Any, where: str, plans_spacing: tuple[float, float, float] | None = None
                       ) -> Requirements | None:
    """Parse a manifest's ``requirements`` section (``None`` when absent).

    Parameters
    ----------
    data
        The section as read from YAML.
    where
        The manifest path, for messages.
    plans_spacing
        The nnU-Net plans' spacing ``(slice, row, column)`` in mm: the default
        ``spacing_mm`` is :data:`SPACING_DEFAULT` times it per axis.

    Raises
    ------
    ModelError
        A key is unknown, missing or has a bad value; the message names it.
    """
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ModelError(f"{where}: requirements must be a mapping (see models/README.md)")
    modality = data.get("modality")
    if modality == "MR":
        return _mr(data, plans_spacing, where)
    if modality == "SM":
        return _wsi(data, where)
    raise ModelError(f"{where}: requirements.modality must be MR or SM, got {modality!r}")
