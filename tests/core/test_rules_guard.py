"""``dicomnode rules test`` shows the guard's verdict for the matched route's model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
from conftest import REPO


def _rules_test(*paths: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "dicomnode", "rules", "test", *map(str, paths)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_rules_test_shows_accepted_flagged_and_refused_series(testdata: Path, tmp_path: Path) -> None:
    t2 = sorted((testdata / "mr" / "prostate-t2-axial-siemens-verio").glob("*.dcm"))
    cropped = tmp_path / "cropped"
    cropped.mkdir()
    datasets = sorted((pydicom.dcmread(f) for f in t2), key=lambda ds: float(ds.ImagePositionPatient[2]))
    for ds in datasets[:10]:
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.12"
        ds.save_as(cropped / f"{ds.SOPInstanceUID}.dcm")
    fluorescence = testdata / "wsi" / "wg26-3dhistech-bpaec-fluorescence" / "5_0"
    # one file of each series is given: the guard judges the whole series found beside it
    out = _rules_test(t2[0], next(cropped.iterdir()), fluorescence)
    accepted, refused, slide = out.split("series ")[1:]
    assert "guard (lln-t2-demo 0.2.0, 40 files): accepted" in accepted
    assert "FLAG intensity median -3.34 SD" in accepted and "FAIL" not in accepted
    assert "guard (lln-t2-demo 0.2.0, 10 files): REFUSED; route t2-pelvis would send a 'not analysed' SR" in refused
    assert "FAIL min_slices: found 10, expected ≥ 12" in refused
    assert "FAIL min_coverage_mm: found 30 mm, expected ≥ 45 mm" in refused
    assert "FAIL illumination: found fluorescence, expected brightfield" in slide
