"""The ``wsi-two-stage`` guard: a slide against the bundle's requirements.

From the headers of the VOLUME instances (before the slide is opened):

- ``illumination``: ``fluorescence`` when an optical path says epifluorescence (DCM
  111743) or the image is not 3-sample colour with one optical path, else
  ``brightfield``;
- ``photometric``: the PhotometricInterpretation values;
- ``base_mpp``: µm/px of the finest VOLUME level (Pixel Measures, else PixelSpacing).

After tissue detection: ``tissue_mm2``, the tissue area (``min_tissue_mm2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom import Dataset

from dicomnode.dicom.slide import open_slide
from dicomnode.inference.manifest import ModelBundle
from dicomnode.inference.requirements import Verdict, WsiRequirements
from dicomnode.pipelines.guard import GuardReport
from dicomnode.pipelines.wsi_two_stage.config import WsiSettings
from dicomnode.pipelines.wsi_two_stage.tissue import detect_tissue

__all__ = ["check_files", "check_headers", "check_tissue", "read_headers"]

_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"}
_EPIFLUORESCENCE = "111743"


def read_headers(files: Sequence[Path]) -> list[Dataset]:
    """The headers (no pixel data) of the VOLUME instances among ``files``."""
    out: list[Dataset] = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001,S112 - not DICOM: the slide reader says so later
            continue
        image_type = [str(v).upper() for v in ds.get("ImageType", [])]
        if len(image_type) >= 3 and image_type[2] == "VOLUME":
            out.append(ds)
    return out


def _mpp(ds: Dataset) -> float | None:
    try:
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    except (AttributeError, IndexError):
        spacing = ds.get("PixelSpacing")
    return None if not spacing else round(float(spacing[0]) * 1000.0, 4)


def _illumination(ds: Dataset) -> str:
    codes = {str(item.CodeValue) for path in ds.get("OpticalPathSequence", [])
             for item in path.get("IlluminationTypeCodeSequence", [])}
    paths = int(ds.get("NumberOfOpticalPaths", len(ds.get("OpticalPathSequence", [])) or 1))
    colour = int(ds.get("SamplesPerPixel", 0)) == 3 and str(ds.get("PhotometricInterpretation", "")) in _COLOUR
    return "fluorescence" if _EPIFLUORESCENCE in codes or paths > 1 or not colour else "brightfield"


def measure(headers: Sequence[Dataset]) -> dict[str, Any]:
    """What the guard measures on a slide's VOLUME headers (JSON values)."""
    mpps = [m for m in map(_mpp, headers) if m is not None]
    return {"modality": str(headers[0].get("Modality", "")) if headers else "",
            "illumination": sorted({_illumination(ds) for ds in headers}),
            "photometric": sorted({str(ds.get("PhotometricInterpretation", "")) for ds in headers}),
            "base_mpp": min(mpps) if mpps else None}


def check_headers(bundle: ModelBundle, headers: Sequence[Dataset]) -> GuardReport:
    """Check the header requirements (everything but the tissue area)."""
    req = bundle.requirements if isinstance(bundle.requirements, WsiRequirements) else None
    m = measure(headers)
    if req is None or not headers:  # no VOLUME instance: not a slide to judge; the reader says why
        return GuardReport(measures=m)
    mpp = m["base_mpp"]
    verdicts = [
        Verdict("modality", m["modality"] or "missing", req.modality, m["modality"] == req.modality),
        Verdict("illumination", "/".join(m["illumination"]), req.illumination,
                m["illumination"] == [req.illumination]),
        Verdict("base_mpp", "missing" if mpp is None else f"{mpp:g} µm/px", f"{req.base_mpp} µm/px",
                mpp is not None and mpp in req.base_mpp),
    ]
    if req.photometric:
        verdicts.append(Verdict("photometric", "/".join(m["photometric"]) or "missing", " or ".join(req.photometric),
                                bool(m["photometric"]) and set(m["photometric"]) <= set(req.photometric)))
    return GuardReport(tuple(verdicts), m)


def check_tissue(report: GuardReport, bundle: ModelBundle, area_mm2: float) -> GuardReport:
    """``report`` with the tissue area measured and checked (``min_tissue_mm2``)."""
    measures = {**report.measures, "tissue_mm2": round(area_mm2, 3)}
    req = bundle.requirements
    if not isinstance(req, WsiRequirements):
        return GuardReport(report.verdicts, measures, report.flags)
    verdict = Verdict("min_tissue_mm2", f"{area_mm2:.3g} mm²", f"≥ {req.min_tissue_mm2:g} mm²",
                      area_mm2 >= req.min_tissue_mm2)
    return GuardReport((*report.verdicts, verdict), measures, report.flags)


def check_files(bundle: ModelBundle, files: Sequence[Path]) -> GuardReport:
    """Every requirement on a slide's files (``dicomnode rules test``); the tissue area is
    measured only when the header requirements pass.

    Raises
    ------
    dicomnode.errors.PipelineError
        The slide cannot be opened for the tissue measurement.
    """
    report = check_headers(bundle, read_headers(files))
    if report.refused:
        return report
    tissue_mpp = WsiSettings().tissue_mpp
    with open_slide(files) as slide:
        raster = slide.raster(max(tissue_mpp, slide.mpp), max_upsample=float("inf"))
        tissue = detect_tissue(slide.read_raster(raster), raster.mpp)
    return check_tissue(report, bundle, tissue.area_mm2)
