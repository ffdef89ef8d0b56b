"""A folder of labelled cases: one sub-folder per case, and an optional ``labels.csv``.

Layout::

    CASES/
      labels.csv              optional: case,status[,R1,R2,R3][,mask_mpp]
      <case>/                 the DICOM instances of one series (MR series or WSI slide),
        ...                   in any sub-folders, plus at most one ground-truth file:
        truth.dcm             DICOM SEG (any tool: dcmqi, a viewer, ...), found by SOP class (MR or WSI)
        truth.nii.gz / .nrrd  label image (MR) on the series grid
        truth.xml             ASAP XML (CAMELYON) polygons in level-0 pixels (WSI)
        truth.geojson         QuPath GeoJSON polygons in level-0 pixels (WSI)
        mask_8mpp.png / .tif  binary mask (WSI) at the µm/px in its name or in ``mask_mpp``

``status`` is the reference case label (``positive``/``negative``, also ``1``/``0``,
``pos``/``neg``, ``yes``/``no``); ``R1`` ... are readers' calls of the same. A problem with
one case (no DICOM, two truth files, an unreadable CSV row) becomes that case's error; the
other cases are still evaluated. Only a missing ``CASES`` folder stops the command.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from dicomnode.errors import DicomNodeError

__all__ = ["TRUTH_SUFFIXES", "Case", "CaseError", "discover", "parse_status", "read_labels"]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: Ground-truth files recognised by name (a DICOM SEG is recognised by its SOP class).
TRUTH_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".xml", ".geojson", ".json",
                   ".png", ".tif", ".tiff")
_SKIP = {"labels.csv", "DICOMDIR"}
_POSITIVE = {"positive", "pos", "1", "yes", "true", "y"}
_NEGATIVE = {"negative", "neg", "0", "no", "false", "n", "none"}
#: Reader columns: R1, R2, ... (any ``R<number>``).
_READER = re.compile(r"^R\d+$")


class CaseError(DicomNodeError):
    """One case cannot be evaluated; the message says why (shown in the report)."""


@dataclass
class Case:
    """One case folder.

    Attributes
    ----------
    name
        The folder name (the case id in the report and ``labels.csv``).
    images
        DICOM instance files of the series handed to the pipeline.
    truth
        The ground-truth file, if any.
    status
        Reference case label from ``labels.csv`` (``None``: not given).
    readers
        Reader column → that reader's call (``True`` = positive).
    mask_mpp
        µm/px of a PNG/TIFF mask from ``labels.csv`` (else from its name).
    error
        Why the case cannot be evaluated (``""``: it can).
    """

    name: str
    folder: Path
    images: list[Path] = field(default_factory=list)
    truth: Path | None = None
    status: bool | None = None
    readers: dict[str, bool | None] = field(default_factory=dict)
    mask_mpp: float | None = None
    error: str = ""


def parse_status(value: str | None) -> bool | None:
    """``positive``/``negative`` (and the usual spellings) → True/False; empty → None.

    Raises
    ------
    CaseError
        Any other text.
    """
    text = (value or "").strip().lower()
    if not text:
        return None
    if text in _POSITIVE:
        return True
    if text in _NEGATIVE:
        return False
    raise CaseError(f"case label {value!r} is neither positive nor negative")


def _is_truth(path: Path) -> bool:
    return path.name.lower().endswith(TRUTH_SUFFIXES)


def _classify(case: Case, path: Path) -> None:
    """Put ``path`` into ``case.images`` or ``case.truth``."""
    if _is_truth(path):
        if case.truth is not None:
            raise CaseError(f"two ground-truth files: {case.truth.name} and {path.name}; keep one")
        case.truth = path
        return
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # pydicom raises many types for a non-DICOM file
        return  # notes, thumbnails ...: not part of the case
    if str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS:
        if case.truth is not None:
            raise CaseError(f"two ground-truth files: {case.truth.name} and {path.name}; keep one")
        case.truth = path
    elif "SOPClassUID" in ds:
        case.images.append(path)


def _load_case(folder: Path) -> Case:
    case = Case(folder.name, folder)
    try:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _SKIP):
            _classify(case, path)
        if not case.images:
            raise CaseError(f"no DICOM images in {folder.name}/")
    except CaseError as exc:
        case.error = str(exc)
    return case


def read_labels(path: Path) -> dict[str, dict[str, str]]:
    """Rows of ``labels.csv`` by case name (first column ``case``).

    Raises
    ------
    CaseError
        The file has no ``case`` column.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "case" not in rows[0]:
        raise CaseError(f"{path.name}: the first row must name the columns, one of them 'case'")
    return {str(row["case"]).strip(): row for row in rows}


def _apply_labels(case: Case, row: dict[str, str]) -> None:
    try:
        case.status = parse_status(row.get("status"))
        case.readers = {k: parse_status(v) for k, v in row.items() if k and _READER.match(k)}
        mpp = (row.get("mask_mpp") or "").strip()
        case.mask_mpp = float(mpp) if mpp else None
    except (CaseError, ValueError) as exc:
        case.error = case.error or f"labels.csv: {exc}"


def discover(root: Path) -> tuple[list[Case], list[str]]:
    """The cases under ``root`` (sorted by name) and the problems found beside them.

    Returns
    -------
    cases, notes
        ``notes``: labels.csv rows without a case folder, an unreadable labels.csv.

    Raises
    ------
    CaseError
        ``root`` is not a folder (the command cannot run).
    """
    if not root.is_dir():
        raise CaseError(f"cases folder {root} does not exist")
    cases = [_load_case(p) for p in sorted(root.iterdir()) if p.is_dir()]
    notes: list[str] = []
    labels: dict[str, dict[str, str]] = {}
    if (root / "labels.csv").is_file():
        try:
            labels = read_labels(root / "labels.csv")
        except (CaseError, OSError, csv.Error) as exc:
            notes.append(f"labels.csv ignored: {exc}")
    for case in cases:
        if case.name in labels:
            _apply_labels(case, labels[case.name])
    missing = sorted(set(labels) - {c.name for c in cases})
    if missing:
        notes.append(f"labels.csv names cases without a folder: {', '.join(missing)}")
    return cases, notes
