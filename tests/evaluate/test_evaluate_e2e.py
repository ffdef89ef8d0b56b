"""``dicomnode evaluate`` end to end on synthetic cases with known ground truth, through the demo models.

The figures in metrics.json / cases.csv are checked against the same figures computed here
independently: from the synthetic ground truth and the pipeline's SEG output read with
highdicom (not with the evaluate package's own SEG reader).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from PIL import Image
from slide_seg import build_slide_seg, slide_level  # tests/evaluate helper

from dicomnode.cli import main
from dicomnode.dicom.volume import load_volume
from dicomnode.evaluate.truth_wsi_seg import read_wsi_seg
from dicomnode.synth.mr import generate_case
from dicomnode.synth.wsi import generate_slide

MODELS = Path(__file__).resolve().parents[2] / "models"
pytestmark = [pytest.mark.slow]


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def _mr_case(root: Path, name: str, case, labels: np.ndarray, *, origin_shift: float = 0.0) -> None:
    paths = case.write(root / name / "dicom")
    grid = load_volume(paths).to_sitk()
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    image.CopyInformation(grid)
    image.SetOrigin([o + origin_shift for o in grid.GetOrigin()])
    sitk.WriteImage(image, str(root / name / "truth.nii.gz"))


@pytest.fixture(scope="module")
def mri(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mr_cases")
    a, b = generate_case(21, n_nodes=3), generate_case(23, n_nodes=2)
    _mr_case(root, "a", a, a.labels)
    _mr_case(root, "a_shifted", a, np.roll(a.labels, 2, axis=2))  # same images, truth 2 voxels off
    _mr_case(root, "b", b, b.labels)
    _mr_case(root, "b_other_grid", b, b.labels, origin_shift=5.0)
    (root / "no_images").mkdir()
    (root / "labels.csv").write_text("case,R1,R2\na,positive,positive\nb,negative,positive\n")
    out = tmp_path_factory.mktemp("mr_report")
    code = main(["evaluate", str(root), "--model", str(MODELS / "lln-t2-demo"), "--out", str(out),
                 "--device", "cpu", "--quiet"])
    return {"a": a, "b": b}, out, code


def _node_mask_from_seg(seg_path: Path, case) -> np.ndarray:
    """The pipeline SEG's node segments on the case's slices, read by source instance (highdicom)."""
    seg = hd.seg.segread(seg_path)
    nodes = [n for n in seg.get_segment_numbers() if seg.get_segment_description(n).SegmentLabel.startswith("LN-")]
    uids = [str(ds.SOPInstanceUID) for ds in case.datasets]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=nodes, combine_segments=False,
                                               ignore_spatial_locations=True)
    return np.asarray(pixels).any(axis=-1)


def test_mri_figures_equal_an_independent_computation(mri) -> None:
    cases, out, code = mri
    assert code == 0
    rows = _rows(out / "cases.csv")
    metrics = json.loads((out / "metrics.json").read_text())
    statuses = []
    for name in ("a", "b"):
        case = cases[name]
        truth = np.isin(case.labels, (4, 5))
        pred = _node_mask_from_seg(next((out / "cases" / name).glob("seg_*.dcm")), case)
        expected = 2 * (truth & pred).sum() / (truth.sum() + pred.sum())
        assert float(rows[name]["dice"]) == pytest.approx(expected, abs=1e-4)
        findings = json.loads((out / "cases" / name / "findings.json").read_text())
        truth_status = any(n.positive or n.short_axis_mm >= 7.0 for n in case.nodes)
        statuses.append((truth_status, findings["lln_status"] == "positive"))
        assert int(rows[name]["n_truth_nodes"]) == len(case.nodes)
    m = metrics["metrics"]
    assert m["status"]["acc"]["value"] == pytest.approx(np.mean([t == p for t, p in statuses]))
    assert m["status"]["n"] == 3  # a, a_shifted, b
    assert m["kappa"]["model_vs_R1"]["n"] == 2 and m["kappa"]["R1_vs_R2"]["n"] == 2
    assert m["published"]["status.sen"] == 0.895


def test_mri_shifted_truth_gives_lower_dice_and_bad_cases_are_reported(mri) -> None:
    _, out, _ = mri
    rows = _rows(out / "cases.csv")
    assert float(rows["a_shifted"]["dice"]) < float(rows["a"]["dice"]) - 0.2
    assert "another grid" in rows["b_other_grid"]["error"]
    assert "no DICOM images" in rows["no_images"]["error"]
    report = (out / "report.html").read_text()
    assert "another grid" in report and "0.895 <span class='study'>(the study&#x27;s, Qiao" in report
    assert "data:image/png;base64," in report and "src=\"http" not in report  # self-contained
    for png in ("station_confusion", "short_axis_confusion", "dice", "bland_altman", "status_confusion"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def wsi(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("wsi_cases")
    micro = generate_slide(root / "micro" / "slide", 40, size_mm=(3.0, 3.0), mpp=1.0,
                           deposits=[(1.0, 1.1, 0.8), (2.2, 2.0, 0.15)])
    Image.fromarray(micro.mask(4.0).astype(np.uint8) * 255).save(root / "micro" / "mask_4mpp.png")
    generate_slide(root / "neg" / "slide", 42, size_mm=(3.0, 3.0), mpp=1.0, deposits=[])
    (root / "neg" / "truth.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    stricter = tmp_path_factory.mktemp("bundle") / "wsi-strict"
    shutil.copytree(MODELS / "wsi-ln-demo", stricter)
    manifest = yaml.safe_load((stricter / "model.yaml").read_text())
    manifest["version"], manifest["thresholds"]["tumour_probability"] = "0.1.0-strict", 0.97
    (stricter / "model.yaml").write_text(yaml.safe_dump(manifest))
    out = tmp_path_factory.mktemp("wsi_report")
    code = main(["evaluate", str(root), "--compare", str(MODELS / "wsi-ln-demo"), str(stricter), "--out", str(out),
                 "--gate-sweep", "0.5", "--quiet"])
    return micro, out, code


def test_wsi_figures_equal_an_independent_computation(wsi) -> None:
    micro, out, code = wsi
    assert code == 0
    rows, metrics = _rows(out / "cases.csv"), json.loads((out / "metrics.json").read_text())
    seg = hd.seg.segread(next((out / "cases" / "micro").glob("seg_*.dcm")))
    pred = seg.get_total_pixel_matrix(segment_numbers=[1], combine_segments=False)[..., 0].astype(bool)
    truth = micro.mask(4.0)
    assert pred.shape == truth.shape
    expected = 2 * (truth & pred).sum() / (truth.sum() + pred.sum())
    assert float(rows["micro"]["dice"]) == pytest.approx(expected, abs=1e-4)
    assert (rows["micro"]["truth_class"], rows["neg"]["truth_class"]) == ("micro", "none")
    m = metrics["metrics"]
    assert m["dice_positive_slides"]["n"] == 1 and m["dice_positive_slides"]["mean"] == pytest.approx(expected)
    findings = [json.loads((out / "cases" / n / "findings.json").read_text()) for n in ("micro", "neg")]
    assert m["patch"]["n"] == sum(f["classifier_patches"] for f in findings)
    slide = m["slide"]
    assert (slide["tp"], slide["fn"], slide["tn"], slide["fp"]) == (
        int(findings[0]["metastasis"]), int(not findings[0]["metastasis"]),
        int(not findings[1]["metastasis"]), int(findings[1]["metastasis"]))
    assert [r["gate"] for r in metrics["gate_sweep"]] == [0.5]
    for png in ("roc", "deposit_class_confusion", "dice", "gate_sweep", "cases/micro", "cases/neg"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000


def _auc(truth: np.ndarray, prob: np.ndarray) -> float:
    """Probability that a tumour patch scores above a non-tumour one (ties count one half), by all pairs."""
    pos, neg = prob[truth][:, None], prob[~truth][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def _patches(folder: Path) -> dict[str, np.ndarray]:
    with (folder / "patches.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("x_um", "y_um", "size_um", "probability")}


def test_wsi_patch_figures_equal_an_independent_computation(wsi) -> None:
    """ACC/SEN/SPE/AUC recomputed here from the synthetic truth and the classifier output the pipeline returned."""
    micro, out, _ = wsi
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]["patch"]
    truth_all, prob_all = [], []
    for name, truth_4um in (("micro", micro.mask(4.0)), ("neg", np.zeros_like(micro.mask(4.0)))):
        p = _patches(out / "cases" / name)
        findings = json.loads((out / "cases" / name / "findings.json").read_text())
        assert p["probability"].size == findings["classifier_patches"] > 0
        # the calls at 0.5 are the pipeline's own heatmap bands in its SEG (read with highdicom)
        seg = hd.seg.segread(next((out / "cases" / name).glob("seg_*.dcm")))
        bands = seg.get_total_pixel_matrix(segment_numbers=[2, 3, 4], combine_segments=False).any(axis=-1)
        cells = [(int(y // 4), int(x // 4), int(s // 4))
                 for x, y, s in zip(p["x_um"], p["y_um"], p["size_um"], strict=True)]
        assert [bool(bands[r: r + s, c: c + s].all()) for r, c, s in cells] == (p["probability"] >= 0.5).tolist()
        fraction = np.array([truth_4um[r: r + s, c: c + s].mean() for r, c, s in cells])
        truth_all.append(fraction > 0.2)
        prob_all.append(p["probability"])
    truth, prob = np.concatenate(truth_all), np.concatenate(prob_all)
    call = prob >= 0.5
    assert 0 < truth.sum() < truth.size and metrics["n"] == truth.size
    assert metrics["acc"]["value"] == pytest.approx((call == truth).mean())
    assert metrics["sen"]["value"] == pytest.approx((call & truth).sum() / truth.sum())
    assert metrics["spe"]["value"] == pytest.approx((~call & ~truth).sum() / (~truth).sum())
    assert metrics["auc"]["value"] == pytest.approx(_auc(truth, prob))


@pytest.fixture(scope="module")
def wsi_seg(wsi, tmp_path_factory: pytest.TempPathFactory):
    """The micro slide twice: once with its PNG mask, once with the same mask as a highdicom SEG."""
    micro, _, _ = wsi
    root = tmp_path_factory.mktemp("wsi_seg_cases")
    for name in ("png", "seg"):
        shutil.copytree(micro.folder, root / name / "slide")
    Image.fromarray(micro.mask(4.0).astype(np.uint8) * 255).save(root / "png" / "mask_4mpp.png")
    build_slide_seg(slide_level(micro.files, 4.0), micro.mask(4.0), root / "seg" / "truth.dcm", fractional=True)
    out = tmp_path_factory.mktemp("wsi_seg_report")
    code = main(["evaluate", str(root), "--model", str(MODELS / "wsi-ln-demo"), "--out", str(out), "--quiet"])
    return out, code


def test_wsi_seg_truth_gives_the_same_figures_as_the_png_mask(wsi_seg) -> None:
    out, code = wsi_seg
    assert code == 0
    rows = _rows(out / "cases.csv")
    png, seg = ({k: v for k, v in rows[n].items() if k not in ("case", "seconds")} for n in ("png", "seg"))
    assert png["error"] == "" and png == seg and float(png["dice"]) > 0.5
    assert (out / "cases" / "png" / "patches.csv").read_text() == (out / "cases" / "seg" / "patches.csv").read_text()


def test_the_nodes_own_slide_seg_reads_as_ground_truth(wsi) -> None:
    """The pipeline's SEG (tumour + three heatmap segments, corner at a pixel centre) as a ground truth."""
    micro, out, _ = wsi
    path = next((out / "cases" / "micro").glob("seg_*.dcm"))
    truth = read_wsi_seg(path, slide_level(micro.files, micro.mpp), micro.mpp)
    tumour = hd.seg.segread(path).get_total_pixel_matrix(segment_numbers=[1], combine_segments=False)[..., 0]
    assert truth.mask_mpp == pytest.approx(4.0) and tumour.any()
    assert truth.mask is not None and np.array_equal(truth.mask, tumour.astype(bool))


def test_wsi_compare_reports_paired_differences(wsi) -> None:
    _, out, _ = wsi
    metrics = json.loads((out / "metrics.json").read_text())
    a, b = _rows(out / "cases.csv"), _rows(out / "cases_b.csv")
    dice = metrics["compare"]["dice_mean"]
    assert dice["a"] == pytest.approx(float(a["micro"]["dice"]), abs=1e-4)
    assert dice["b"] == pytest.approx(float(b["micro"]["dice"]), abs=1e-4)
    assert dice["diff"]["value"] == pytest.approx(dice["b"] - dice["a"])
    assert metrics["compare"]["status_mcnemar"]["n"] == 2
    assert "Comparison A = wsi-ln-demo" in (out / "report.html").read_text()


def test_command_that_cannot_run_exits_non_zero(tmp_path: Path) -> None:
    assert main(["evaluate", str(tmp_path / "missing"), "--model", str(MODELS / "wsi-ln-demo"),
                 "--out", str(tmp_path / "out")]) == 2


CHROMIUM = Path("/usr/bin/chromium")


def test_report_renders_tables_and_plots_in_headless_chromium(wsi, tmp_path: Path) -> None:
    """The report opens offline in Debian's chromium; the screenshot shows text and the (coloured) plots."""
    import subprocess

    assert CHROMIUM.exists(), "no /usr/bin/chromium: `make deps` installs the Debian package chromium"
    _, out, _ = wsi
    shot = tmp_path / "report.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                    "--enable-unsafe-swiftshader", "--hide-scrollbars", "--window-size=1200,2400",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    (out / "report.html").as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2400, 1200)
    dark_text = (pixels[:400].max(axis=-1) < 80).mean()  # the title and headline table
    coloured = (pixels.max(axis=-1) - pixels.min(axis=-1) > 80).mean()  # tables are grey; plots are not
    assert dark_text > 0.005, dark_text
    assert coloured > 0.003, coloured
