"""Ground truth reading: the cases folder, MR label images and SEGs (incl. one written by dcmqi),
WSI annotations (ASAP XML, QuPath GeoJSON, PNG masks); mismatches are clear per-case errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from dicomnode.dicom.volume import load_volume
from dicomnode.evaluate.cases import CaseError, discover
from dicomnode.evaluate.truth_mr import read_mr_truth
from dicomnode.evaluate.truth_wsi import read_wsi_truth
from dicomnode.pipelines.mri_lln.labels import LabelScheme
from dicomnode.synth.mr import generate_case

SCHEME = LabelScheme({1: "internal_iliac", 2: "obturator", 3: "external_iliac"}, (4,), (5,))
DCMQI = Path(sys.executable).parent / "itkimage2segimage"


@pytest.fixture(scope="module")
def mr(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("mr")
    case = generate_case(31, shape=(16, 64, 64), n_nodes=2)
    paths = case.write(folder / "dicom")
    return case, paths, load_volume(paths), folder


def _nifti(labels: np.ndarray, like: sitk.Image, path: Path) -> Path:
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    image.CopyInformation(like)
    sitk.WriteImage(image, str(path))
    return path


def test_cases_folder_errors_are_per_case(tmp_path: Path, mr) -> None:
    _, paths, _, _ = mr
    (tmp_path / "good").mkdir()
    for p in paths[:2]:
        shutil.copy(p, tmp_path / "good" / p.name)
    (tmp_path / "good" / "notes.txt").write_text("not DICOM, ignored")
    (tmp_path / "empty").mkdir()
    (tmp_path / "twice").mkdir()
    shutil.copy(paths[0], tmp_path / "twice" / "a.dcm")
    (tmp_path / "twice" / "t1.nii.gz").write_bytes(b"")
    (tmp_path / "twice" / "t2.nrrd").write_bytes(b"")
    (tmp_path / "labels.csv").write_text("case,status,R1,R2\ngood,positive,neg,1\nghost,negative,,\nempty,maybe,,\n")
    cases, notes = discover(tmp_path)
    by = {c.name: c for c in cases}
    assert by["good"].error == "" and len(by["good"].images) == 2 and by["good"].truth is None
    assert by["good"].status is True and by["good"].readers == {"R1": False, "R2": True}
    assert "no DICOM images" in by["empty"].error
    assert "two ground-truth files" in by["twice"].error
    assert any("ghost" in n for n in notes)
    with pytest.raises(CaseError, match="does not exist"):
        discover(tmp_path / "nowhere")


def test_label_image_on_the_grid_and_on_another(tmp_path: Path, mr) -> None:
    case, _, volume, _ = mr
    good = _nifti(case.labels, volume.to_sitk(), tmp_path / "truth.nii.gz")
    assert np.array_equal(read_mr_truth(good, volume, SCHEME, ""), case.labels)
    shifted = volume.to_sitk()
    shifted.SetOrigin([o + 3.0 for o in shifted.GetOrigin()])
    other = _nifti(case.labels, shifted, tmp_path / "other.nrrd")
    with pytest.raises(CaseError, match="another grid"):
        read_mr_truth(other, volume, SCHEME, "")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"garbage")
    with pytest.raises(CaseError, match="cannot read"):
        read_mr_truth(bad, volume, SCHEME, "")


def _dcmqi_meta(path: Path) -> Path:
    names = {1: "internal iliac region", 2: "obturator region", 3: "external iliac region",
             4: "node positive", 5: "node negative"}
    segments = [{
        "labelID": value, "SegmentLabel": name, "SegmentAlgorithmType": "MANUAL",
        "SegmentDescription": name,
        "SegmentedPropertyCategoryCodeSequence": {"CodeValue": "91723000", "CodingSchemeDesignator": "SCT",
                                                  "CodeMeaning": "Anatomical Structure"},
        "SegmentedPropertyTypeCodeSequence": {"CodeValue": "59441001", "CodingSchemeDesignator": "SCT",
                                              "CodeMeaning": "Lymph node"},
        "recommendedDisplayRGBValue": [255, 0, 0]} for value, name in names.items()]
    meta = {"ContentCreatorName": "Reader^One", "ClinicalTrialSeriesID": "1", "ClinicalTrialTimePointID": "1",
            "SeriesDescription": "ground truth", "SeriesNumber": "300", "InstanceNumber": "1",
            "BodyPartExamined": "PELVIS", "segmentAttributes": [segments]}
    path.write_text(json.dumps(meta))
    return path


def test_seg_written_by_dcmqi_reads_back_as_the_label_map(tmp_path: Path, mr) -> None:
    case, paths, volume, folder = mr
    assert DCMQI.exists(), "dcmqi's itkimage2segimage missing: it is a dev dependency (`make venv`)"
    nifti = _nifti(case.labels, volume.to_sitk(), tmp_path / "labels.nii.gz")
    seg = tmp_path / "truth.dcm"
    subprocess.run([str(DCMQI), "--inputImageList", str(nifti), "--inputDICOMDirectory", str(folder / "dicom"),
                    "--outputDICOM", str(seg), "--inputMetadata", str(_dcmqi_meta(tmp_path / "meta.json"))],
                   check=True, capture_output=True, timeout=300)
    frame_of_reference = str(case.datasets[0].FrameOfReferenceUID)
    labels = read_mr_truth(seg, volume, SCHEME, frame_of_reference)
    assert np.array_equal(labels, case.labels)
    with pytest.raises(CaseError, match="another frame of reference"):
        read_mr_truth(seg, volume, SCHEME, "1.2.3.4")


SIZE = (1000, 800)  # level-0 px at 1 µm/px


def test_asap_xml_polygons_and_exclusions(tmp_path: Path) -> None:
    xml = tmp_path / "truth.xml"
    square = [(100, 100), (300, 100), (300, 300), (100, 300)]
    hole = [(180, 180), (220, 180), (220, 220), (180, 220)]

    def ann(points, group):
        coords = "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>' for i, (x, y) in enumerate(points))
        return f'<Annotation Type="Polygon" PartOfGroup="{group}"><Coordinates>{coords}</Coordinates></Annotation>'

    xml.write_text(f"<ASAP_Annotations><Annotations>{ann(square, '_0')}{ann(hole, '_2')}</Annotations>"
                   "</ASAP_Annotations>")
    mask = read_wsi_truth(xml).raster(4.0, 1.0, SIZE)
    assert mask.shape == (200, 250)
    # pixel centres (c + .5)·4 µm inside [100, 300] → columns 25..74; the hole [180, 220] → 45..54
    expected = np.zeros((200, 250), bool)
    expected[25:75, 25:75] = True
    expected[45:55, 45:55] = False
    assert np.array_equal(mask, expected)


def test_qupath_geojson_counts_tumour_classes_only(tmp_path: Path) -> None:
    def feature(points, name):
        return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [points]},
                "properties": {"classification": {"name": name}}}

    tumour = feature([[0, 0], [400, 0], [400, 400], [0, 400], [0, 0]], "Tumor")
    stroma = feature([[500, 500], [900, 500], [900, 700], [500, 700], [500, 500]], "Stroma")
    path = tmp_path / "truth.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [tumour, stroma]}))
    mask = read_wsi_truth(path).raster(8.0, 1.0, SIZE)
    assert mask.shape == (100, 125) and mask.sum() == 50 * 50 and mask[:50, :50].all()


def test_png_mask_at_its_stated_mpp(tmp_path: Path) -> None:
    truth = np.zeros((100, 125), bool)  # 8 µm/px over 1000 × 800 µm
    truth[10:20, 30:60] = True
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "mask_8mpp.png")
    read = read_wsi_truth(tmp_path / "mask_8mpp.png")
    assert np.array_equal(read.raster(8.0, 1.0, SIZE), truth)
    assert read.raster(4.0, 1.0, SIZE).sum() == 4 * truth.sum()
    with pytest.raises(CaseError, match="does not cover the slide"):
        read.raster(8.0, 1.0, (2000, 800))
    Image.fromarray(truth.astype(np.uint8)).save(tmp_path / "mask.png")
    with pytest.raises(CaseError, match="state its µm/px"):
        read_wsi_truth(tmp_path / "mask.png")
