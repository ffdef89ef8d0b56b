"""TID 1500 WSI SR on real slide headers (shared test data via the ``wsi_dir`` fixture):
dciodvfy, highdicom parse-back, SCOORD3D geometry."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes
from test_wsi_seg import (
    BANDS,
    CMU_DICOMIZER,
    CMU_WSI2DCM,
    bundle,
    level0,
    make_inputs,
    spacing_um,
    uid,
)

from dicomnode.errors import OutputError
from dicomnode.outputs.validate import dciodvfy_errors
from dicomnode.pipelines.wsi_two_stage.seg import SegGeometry, build_wsi_seg, slide_reference
from dicomnode.pipelines.wsi_two_stage.sr import DepositReport, SlideReport, build_wsi_sr, size_class_code


def report(n_deposits: int) -> SlideReport:
    square = np.array([[800, 480], [1400, 480], [1400, 920], [800, 920], [800, 480]], float)
    deps = [
        DepositReport(k + 1, 0.3 / (k + 1), 0.06 / (k + 1), "micro" if k == 0 else "itc", square / (k + 1))
        for k in range(n_deposits)
    ]
    return SlideReport(
        size_class="micro" if deps else "none",
        largest_deposit_mm=deps[0].largest_dimension_mm if deps else 0.0,
        tumour_area_mm2=sum(d.area_mm2 for d in deps),
        tissue_area_mm2=1.44,
        max_probability=0.97 if deps else 0.12,
        deposits=deps,
    )


def build(tmp_path: Path, source: Path, rep: SlideReport) -> tuple[Path, object]:
    """Build the SEG and the SR of ``rep`` on the slide ``source``; return the SR's path and
    the slide reference."""
    base = level0(source)
    tumour, bands = make_inputs(base, 8.0, cell_px=8)
    seg = build_wsi_seg(SegGeometry(base, spacing_um(base), 8.0), tumour, bands, bundle(), uid, band_limits=BANDS)
    ref = slide_reference(base, uid("specimen"))
    sr = build_wsi_sr(ref, seg, rep, bundle(), uid)
    out = tmp_path / "sr.dcm"
    sr.save_as(out)
    return out, ref


@pytest.mark.parametrize("source", [CMU_DICOMIZER, CMU_WSI2DCM], ids=["dicomizer", "wsi2dcm"])
@pytest.mark.parametrize("n_deposits", [0, 3])
def test_sr_valid_and_parses_back(wsi_dir: Path, tmp_path: Path, source: str, n_deposits: int) -> None:
    rep = report(n_deposits)
    out, _ = build(tmp_path, wsi_dir / source, rep)
    assert dciodvfy_errors(out) == []
    doc = hd.sr.srread(out)
    assert doc.SOPInstanceUID == uid("sr.instance") and doc.VerificationFlag == "UNVERIFIED"
    assert "NOT FOR CLINICAL USE" in doc.SeriesDescription
    planar = doc.content.get_planar_roi_measurement_groups()
    assert len(planar) == n_deposits
    for group, dep in zip(planar, rep.deposits, strict=True):
        values = {m.name.meaning: m.value for m in group.get_measurements()}
        assert values["Area"] == pytest.approx(dep.area_mm2)
        assert values["Long axis"] == pytest.approx(dep.largest_dimension_mm)
        assert group.reference_type == codes.DCM.ImageRegion
        assert group.roi.GraphicType == "POLYGON"


def test_sr_slide_findings(wsi_dir: Path, tmp_path: Path) -> None:
    rep = report(2)
    out, _ = build(tmp_path, wsi_dir / CMU_DICOMIZER, rep)
    doc = hd.sr.srread(out)
    slide, tissue = doc.content.get_image_measurement_groups()
    values = {m.name.meaning: m.value for m in slide.get_measurements()}
    assert values == pytest.approx({"Long axis": 0.3, "Area": 0.09, "Probability": 0.97})
    evaluations = {q.name.meaning: q.value.meaning for q in slide.get_qualitative_evaluations()}
    assert evaluations["Neoplasm, Secondary"] == "Present"
    assert evaluations["Metastasis size class (AJCC)"] == "Micrometastasis"
    assert tissue.finding_type == codes.SCT.Tissue
    assert [m.value for m in tissue.get_measurements()] == [pytest.approx(1.44)]


def test_polygon_is_in_slide_coordinates_of_the_source_pixels(wsi_dir: Path, tmp_path: Path) -> None:
    rep = report(1)
    out, ref = build(tmp_path, wsi_dir / CMU_DICOMIZER, rep)
    roi = hd.sr.srread(out).content.get_planar_roi_measurement_groups()[0].roi
    xyz = np.asarray(roi.GraphicData, float).reshape(-1, 3)
    back = hd.spatial.ReferenceToImageTransformer.for_image(ref, for_total_pixel_matrix=True)
    assert np.allclose(back(xyz)[:, :2], rep.deposits[0].outline, atol=1e-3)


def test_unknown_size_class_is_refused() -> None:
    with pytest.raises(OutputError, match="unknown size class 'huge'"):
        size_class_code("huge")


def test_evidence_lists_the_source_and_the_seg(wsi_dir: Path, tmp_path: Path) -> None:
    out, ref = build(tmp_path, wsi_dir / CMU_DICOMIZER, report(1))
    doc = hd.sr.srread(out)
    listed = {
        (item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID)
        for study in doc.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert (ref.SOPClassUID, ref.SOPInstanceUID) in listed
    assert ("1.2.840.10008.5.1.4.1.1.66.4", uid("seg.instance")) in listed
