"""The ``mri-lln`` guard: the volume's geometry and header against the bundle's requirements.

Measured from the pixel geometry, never from descriptions:

- ``tilt_deg``: angle between the slice normal (from ImageOrientationPatient) and the
  required plane's normal (axial: the patient's head–feet axis);
- ``spacing_mm``: slice step, row and column spacing; ``slices``; ``coverage_mm`` (slices ×
  step); ``fov_mm``: rows × row spacing, columns × column spacing;
- the header values the bundle constrains (e.g. EchoTime, RepetitionTime: T2 weighting),
  and with ``original_only`` ImageType value 1 (a derived map such as ADC is refused);
- ``intensity``: percentiles of the body voxels (above 10 % of the 99.5th percentile) and
  ``z``, how many standard deviations their median lies from the mean foreground
  intensity in the nnU-Net plans (``foreground_intensity_properties_per_channel``).

A failed requirement refuses the input. Flags (accepted, but beyond ``requirements.warn``):
tilt above ``tilt_deg``, a spacing coarser than the plans' by more than
``spacing_margin``, ``|z|`` above ``intensity_z``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset

from dicomnode.dicom.volume import Volume, load_volume, read_instances
from dicomnode.inference.manifest import ModelBundle
from dicomnode.inference.requirements import PLANES, MrRequirements, Verdict
from dicomnode.pipelines.guard import GuardReport

__all__ = ["check_files", "check_volume", "measure", "plans_intensity"]

_AXES = ("slice", "row", "column")


def plans_intensity(bundle: ModelBundle) -> Mapping[str, float] | None:
    """Channel 0 foreground intensity properties of the bundle's nnU-Net plans, if any."""
    folder = bundle.root / str(bundle.input.get("model_folder", "."))
    try:
        props = json.loads((folder / "plans.json").read_text())["foreground_intensity_properties_per_channel"]
        return {k: float(v) for k, v in props["0"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _intensity(array: np.ndarray, plans: Mapping[str, float] | None) -> dict[str, float]:
    top = float(np.percentile(array, 99.5))
    body = array[array > 0.1 * top] if top > 0 else array.ravel()
    low, median, high = (float(v) for v in np.percentile(body, [0.5, 50.0, 99.5]))
    out = {"p00_5": round(low, 2), "median": round(median, 2), "p99_5": round(high, 2)}
    if plans is not None and plans.get("std", 0.0) > 0:
        out["z"] = round((median - plans["mean"]) / plans["std"], 2)
    return out


def measure(volume: Volume, header: Dataset, req: MrRequirements | None,
            plans: Mapping[str, float] | None = None) -> dict[str, Any]:
    """What the guard measures on a volume (JSON values)."""
    normal = volume.direction[:, 2]
    reference = np.asarray(PLANES[req.plane if req else "axial"])
    tilt = math.degrees(math.acos(min(1.0, abs(float(normal @ reference)))))
    z, y, x = volume.shape
    dz, dy, dx = volume.spacing_zyx
    headers = {key: header.get(key) for key in (req.header if req else {})}
    image_type = [str(v).upper() for v in header.get("ImageType", [])]
    return {"modality": str(header.get("Modality", "")), "image_type": image_type[0] if image_type else "",
            "tilt_deg": round(tilt, 2),
            "spacing_mm": {"slice": round(dz, 4), "row": round(dy, 4), "column": round(dx, 4)},
            "slices": z, "coverage_mm": round(z * dz, 2), "fov_mm": [round(y * dy, 1), round(x * dx, 1)],
            "header": {k: None if v is None or v == "" else float(v) for k, v in headers.items()},
            "intensity": _intensity(volume.array, plans)}


def _verdicts(m: Mapping[str, Any], req: MrRequirements) -> list[Verdict]:
    out = [Verdict("modality", m["modality"] or "missing", req.modality, m["modality"] == req.modality),
           Verdict("plane", f"{m['tilt_deg']:g}° from {req.plane}", f"≤ {req.max_tilt_deg:g}°",
                   m["tilt_deg"] <= req.max_tilt_deg)]
    for axis, allowed in req.spacing_mm.items():
        found = m["spacing_mm"][axis]
        out.append(Verdict(f"spacing_mm.{axis}", f"{found:g} mm", f"{allowed} mm", found in allowed))
    out.append(Verdict("min_slices", str(m["slices"]), f"≥ {req.min_slices}", m["slices"] >= req.min_slices))
    out.append(Verdict("min_coverage_mm", f"{m['coverage_mm']:g} mm", f"≥ {req.min_coverage_mm:g} mm",
                       m["coverage_mm"] >= req.min_coverage_mm))
    fov = m["fov_mm"]
    out.append(Verdict("fov_mm", f"{fov[0]:g} × {fov[1]:g} mm", f"{req.fov_mm} mm",
                       all(side in req.fov_mm for side in fov)))
    if req.original_only:
        out.append(Verdict("original_only", f"ImageType {m['image_type'] or 'missing'}", "ImageType ORIGINAL "
                           "(not a derived map such as ADC)", m["image_type"] == "ORIGINAL"))
    for key, allowed in req.header.items():
        value = m["header"].get(key)
        out.append(Verdict(f"header.{key}", "missing" if value is None else f"{value:g}", str(allowed),
                           value is not None and value in allowed))
    return out


def _flags(m: Mapping[str, Any], req: MrRequirements) -> list[str]:
    warn, flags = req.warn, []
    if m["tilt_deg"] > warn.tilt_deg:
        flags.append(f"tilt {m['tilt_deg']:g}° from {req.plane} (warning above {warn.tilt_deg:g}°)")
    for axis, planned in zip(_AXES, req.plans_spacing_mm or (), strict=False):
        found = m["spacing_mm"][axis]
        if found > planned * (1.0 + warn.spacing_margin):
            flags.append(f"{axis} spacing {found:g} mm coarser than the model's {planned:g} mm "
                         f"(warning above +{warn.spacing_margin:.0%})")
    z = m["intensity"].get("z")
    if z is not None and abs(z) > warn.intensity_z:
        flags.append(f"intensity median {z:+g} SD from the training foreground mean "
                     f"(warning beyond {warn.intensity_z:g} SD)")
    return flags


def check_volume(volume: Volume, header: Dataset, bundle: ModelBundle) -> GuardReport:
    """Measure ``volume`` and check it against ``bundle.requirements``.

    Parameters
    ----------
    volume
        The series' volume.
    header
        One instance of the series (Modality and the constrained header values).
    bundle
        The model bundle; without MR requirements only the measures are reported.
    """
    req = bundle.requirements if isinstance(bundle.requirements, MrRequirements) else None
    m = measure(volume, header, req, plans_intensity(bundle))
    if req is None:
        return GuardReport(measures=m)
    return GuardReport(tuple(_verdicts(m, req)), m, tuple(_flags(m, req)))


def check_files(bundle: ModelBundle, files: Sequence[Path]) -> GuardReport:
    """Read a series and check it (``dicomnode rules test``).

    Raises
    ------
    dicomnode.errors.VolumeError
        The files are not one regular volume.
    """
    datasets = read_instances(files)
    return check_volume(load_volume(datasets), datasets[0], bundle)

