"""Browser check: the slide results in dicom-microscopy-viewer (the engine of Slim).

Run with ``make test-viewer`` (tests/viewer/viewer.mk), which also ``npm pack``s
``dicom-microscopy-viewer`` and ``dicomweb-client`` into ``.cache/dmv/``; skipped by plain
``make test`` (tests/conftest.py). No mocks:

1. two slides through the real ``wsi-two-stage`` pipeline with the committed demo bundle:
   a synthetic node-positive slide with deposits at known positions
   (``dicomnode.synth.wsi.generate_slide``) and the real CMU-1 pyramid (``testdata``);
   each gives a tiled SEG (tumour + three heatmap bands) and a TID 1500 SR;
2. slides, SEGs and SRs → a real Orthanc (Debian, DICOMweb plugin);
3. tests/viewer/dmv/ (a page with the library's UMD bundle) served with the DICOMweb proxy of
   tests/viewer/ohif_proxy.py on one loopback origin;
4. tests/viewer/microscopy_check.cjs drives headless chromium: open the slide, add the SEG
   (``addSegments``) and show each segment alone, add the SR's SCOORD3D regions as ROIs
   (``addROI``), read back ``getAllSegments``/``getAllROIs``, map known positions to
   viewport pixels with the viewer's own map and affine;
5. assertions here, from the screenshots and the viewer's answers: the slide shows; each
   segment's overlay covers where the SEG's own pixels say (mapped through the viewer) and
   nothing else; on the synthetic slide the tumour and band overlays sit on the known
   deposits and nowhere else; the SR's regions are listed with their size class and area
   and drawn on the deposits' outlines.

Found with it (issue 14): the library (0.48.24) cannot decode JPEG 2000 frames of a BINARY
SEG ("Frame value does not have expected length: 65536 instead of 8192": it expects the
decoded frame bit-packed), so the slide SEG is now written uncompressed (bit-packed). And
it recomputes an ROI's "Area" from the outline, replacing the SR's value, as mm² × 1000
labelled with the view's unit ("503.75 μm2" for 0.504 mm²) — its bug, reported here, not
ours; the check compares that number with the SR's area. Slim, the application, shows an
SR's regions only when its observation context names a specimen subject (TID 1009: Subject
Class "Specimen", Specimen UID, Specimen Identifier, Container Identifier), and a SEG only
with the slide's Frame of Reference and Container Identifier: the page applies these
checks of Slim's too, and the node's slide SR now carries that context.

Screenshots and ``microscopy.json`` go to ``VIEWER_OUT`` (default ``tests/viewer/out``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from netutil import free_port
from orthanc import Orthanc, private_netns
from PIL import Image
from pydicom.dataset import Dataset
from scipy import ndimage

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("VIEWER_CACHE", REPO / ".cache"))
DMV_VERSION = os.environ.get("DMV_VERSION", "0.48.24")
DWC_VERSION = os.environ.get("DWC_VERSION", "0.11.3")
DMV_DIST = CACHE / "dmv" / f"dicom-microscopy-viewer-{DMV_VERSION}" / "package" / "dist"
DWC_JS = CACHE / "dmv" / f"dicomweb-client-{DWC_VERSION}" / "package" / "build" / "dicomweb-client.js"
NODE_MODULES = CACHE / "viewer-node" / "node_modules"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
OUT = Path(os.environ.get("VIEWER_OUT", HERE / "out"))
TIMEOUT_S = int(os.environ.get("VIEWER_TIMEOUT_S", "240"))
MPP = 1.0  # synthetic slide level 0, µm/px
DEPOSITS = [(1.0, 1.1, 0.8), (2.2, 2.0, 0.15)]  # (x mm, y mm, diameter mm): a micro + an ITC
MARGIN_MM = 0.06  # overlay edge tolerance: segmenter boundary wander + one 4 µm output px + AA
BAND_MARGIN_MM = 0.2  # heatmap bands live on the classifier patch grid: a patch and a halo


# ------------------------------------------------------------------------------ inputs


def _pipeline() -> Any:
    from dicomnode.inference.manifest import load_bundle
    from dicomnode.pipelines.wsi_two_stage import create

    return create(load_bundle(REPO / "models" / "wsi-ln-demo"), {"providers": ["CPUExecutionProvider"],
                                                                "intra_op_threads": 2})


def _run(pipe: Any, files: list[Path], tmp: Path) -> tuple[Path, Path, dict[str, Any]]:
    """The pipeline's SEG and SR for ``files``, written to ``tmp`` as the node writes them."""
    from dicomnode.pipelines.base import PipelineContext
    from dicomnode.worker_child import write_result

    series = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    tmp.mkdir(parents=True, exist_ok=True)
    result = pipe.run(files, PipelineContext(pipeline="wsi-two-stage", study_uid="", series_uid=series, workdir=tmp))
    names = write_result(result, tmp)
    (seg,) = [tmp / n for n in names if n.startswith("SEG-")]
    (sr,) = [tmp / n for n in names if n.startswith("SR-")]
    return seg, sr, result.findings


def _upload(orthanc: Orthanc, paths: list[Path]) -> None:
    for path in paths:
        request = urllib.request.Request(f"{orthanc.url}/instances", data=path.read_bytes(), method="POST",
                                         headers={"Content-Type": "application/dicom"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200, f"Orthanc refused {path.name}"


def _seg_points(seg_path: Path, per_segment: int = 400) -> dict[int, np.ndarray]:
    """Per segment number: level-0 (col, row) of a sample of the SEG's own positive pixels
    (pixel centres, from its pixel spacing over the slide's level-0 spacing)."""
    seg = hd.seg.segread(seg_path)
    spacing = float(seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0])
    matrix = seg.get_total_pixel_matrix(combine_segments=False)
    rng = np.random.default_rng(0)
    out = {}
    for k in range(matrix.shape[-1]):
        rows, cols = np.nonzero(matrix[..., k])
        pick = rng.choice(len(rows), size=min(per_segment, len(rows)), replace=False) if len(rows) else []
        out[k + 1] = np.stack([cols[pick] + 0.5, rows[pick] + 0.5], axis=1) * spacing if len(rows) \
            else np.zeros((0, 2))
    return out  # in mm from the top-left corner: divided by the level-0 spacing by the caller


def _level0(slide: list[Path]) -> Dataset:
    heads = (pydicom.dcmread(p, stop_before_pixels=True) for p in slide)
    return max(heads, key=lambda d: int(d.TotalPixelMatrixColumns))


def _case(name: str, slide: list[Path], seg: Path, sr: Path) -> dict[str, Any]:
    """The driver's spec for one slide: series to open, and level-0 (col, row) points to map:
    the slide's corners, then a sample of each segment's own pixels, then the known deposits
    (centre and a point on the rim each) when the slide is synthetic."""
    level0 = _level0(slide)
    spacing = float(level0.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0])
    cols, rows = int(level0.TotalPixelMatrixColumns), int(level0.TotalPixelMatrixRows)
    matrix = [[0, 0], [cols, 0], [cols, rows], [0, rows]]
    order = {}
    for number, mm in _seg_points(seg).items():
        order[number] = (len(matrix), len(mm))
        matrix += (mm / spacing).tolist()
    deposits = len(matrix)
    if name == "synthetic":
        for x, y, d in DEPOSITS:
            matrix += [[x / spacing, y / spacing], [(x + d / 2) / spacing, y / spacing]]
    seg_head, sr_ds = pydicom.dcmread(seg, stop_before_pixels=True), pydicom.dcmread(sr)
    outlines = sr_outlines(sr_ds)
    return {"name": name, "study": str(level0.StudyInstanceUID), "slide_series": str(level0.SeriesInstanceUID),
            "seg_series": str(seg_head.SeriesInstanceUID), "sr_series": str(sr_ds.SeriesInstanceUID),
            "matrix_points": matrix, "seg_order": order, "deposit_index": deposits,
            "slide_points": [p for pts in outlines.values() for p in pts],
            "outline_order": {k: len(v) for k, v in outlines.items()}}


def sr_outlines(sr: Dataset) -> dict[str, list[list[float]]]:
    """Tracking identifier → (x, y) slide mm of its SCOORD3D outline, from the SR itself."""
    out = {}
    for container in sr.ContentSequence:
        for group in container.get("ContentSequence", []) if container.ValueType == "CONTAINER" else []:
            items = group.get("ContentSequence", [])
            ident = [str(it.TextValue) for it in items if it.ConceptNameCodeSequence[0].CodeValue == "112039"]
            for it in items:
                if it.ValueType == "SCOORD3D":
                    data = np.asarray(it.GraphicData, float).reshape(-1, 3)
                    out[ident[0]] = data[:, :2].tolist()
    return out


# ------------------------------------------------------------------------------ pictures


def _rgb(png: str | Path) -> np.ndarray:
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def overlay(base: str | Path, shown: str | Path) -> np.ndarray:
    """Pixels that an overlay changed: ``shown`` against the same view without it."""
    return np.abs(_rgb(shown) - _rgb(base)).sum(axis=-1) > 60


def green(base: str | Path, shown: str | Path) -> np.ndarray:
    """Pixels drawn in the ROI stroke colour (pure green) that were not green before."""
    rgb = _rgb(shown)
    return (rgb[..., 1] > 180) & (rgb[..., 0] < 110) & (rgb[..., 2] < 110) & overlay(base, shown)


def fit_affine(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares affine src → dst (2-D points) and its largest residual in pixels."""
    a = np.hstack([src, np.ones((len(src), 1))])
    m, *_ = np.linalg.lstsq(a, dst, rcond=None)
    return m, float(np.abs(a @ m - dst).max())


def seg_expected(seg_path: Path, number: int, level0_mm: float, to_screen: np.ndarray,
                 shape: tuple[int, int]) -> np.ndarray:
    """Where segment ``number`` must show in the viewport: its own pixels (centres) mapped
    level-0 → screen with ``to_screen``, painted as the screen area one SEG pixel covers."""
    seg = hd.seg.segread(seg_path)
    spacing = float(seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0])
    mask = seg.get_total_pixel_matrix(combine_segments=False)[..., number - 1]
    rows, cols = np.nonzero(mask)
    f = spacing / level0_mm
    out = np.zeros(shape, bool)
    # sub-sample each SEG pixel so that even a pixel larger than a screen pixel is filled
    for dy in np.linspace(0.1, 0.9, 4):
        for dx in np.linspace(0.1, 0.9, 4):
            pts = np.stack([(cols + dx) * f, (rows + dy) * f, np.ones(len(cols))], axis=1) @ to_screen
            x, y = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
            ok = (x >= 0) & (y >= 0) & (x < shape[1]) & (y < shape[0])
            out[y[ok], x[ok]] = True
    return out


def disc_mask(shape: tuple[int, int], centres: list[tuple[float, float]], radii: list[float]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, bool)
    for (cx, cy), r in zip(centres, radii, strict=True):
        out |= (xx - cx) ** 2 + (yy - cy) ** 2 <= max(r, 0.0) ** 2
    return out


# ------------------------------------------------------------------------------ checks


def check_slide(c: dict[str, Any]) -> list[str]:
    """The slide is drawn: inside its outline most pixels are neither black (no tile) and a
    good part is tissue (neither white glass nor black)."""
    from PIL import ImageDraw

    rgb = _rgb(c["shots"]["slide"])
    outline = Image.new("1", (rgb.shape[1], rgb.shape[0]))
    ImageDraw.Draw(outline).polygon([tuple(p) for p in c["matrix_pixels"][:4]], fill=1)
    inside = rgb[np.asarray(outline, bool)]
    if len(inside) < 10000:
        return [f"the slide covers only {len(inside)} viewport pixels"]
    black = float((inside.max(axis=-1) < 20).mean())
    tissue = float(((inside.min(axis=-1) < 200) & (inside.max(axis=-1) >= 20)).mean())
    c["slide_black"], c["slide_tissue"] = round(black, 4), round(tissue, 4)
    problems = []
    if black > 0.02:
        problems.append(f"{black:.1%} of the slide area is black: tiles not drawn")
    if tissue < 0.05:
        problems.append(f"only {tissue:.1%} of the slide area shows tissue")
    return problems


def check_segments(c: dict[str, Any], spec: dict[str, Any], seg: Path, level0_mm: float) -> list[str]:
    """Each segment alone: its overlay covers the SEG's own pixels as the viewer maps the
    slide, and nothing else."""
    src, dst = np.asarray(spec["matrix_points"], float), np.asarray(c["matrix_pixels"], float)
    to_screen, residual = fit_affine(src[:4], dst[:4])
    _, all_residual = fit_affine(src, dst)
    problems = [] if max(residual, all_residual) < 1.5 else [f"the viewer's slide mapping is not affine ({residual})"]
    base = c["shots"]["slide"]
    labels = {s["number"]: s["label"] for s in c["segments"]}
    c["segment_checks"] = {}
    for number, label in sorted(labels.items()):
        shown = overlay(base, c["shots"][f"segment{number}"])
        expected = seg_expected(seg, number, level0_mm, to_screen, shown.shape)
        core, halo = ndimage.binary_erosion(expected, iterations=1), ndimage.binary_dilation(expected, iterations=3)
        covered = float((shown & core).sum() / max(core.sum(), 1))
        stray = float((shown & ~halo).sum() / max(shown.sum(), 1))
        c["segment_checks"][label] = {"expected_px": int(expected.sum()), "drawn_px": int(shown.sum()),
                                      "covered": round(covered, 3), "stray": round(stray, 3)}
        if expected.sum() == 0 and shown.sum() > 20:
            problems.append(f"segment {label!r} is empty but {int(shown.sum())} px were drawn")
        elif expected.sum() and (covered < 0.8 or stray > 0.03):
            problems.append(f"segment {label!r} not drawn where its pixels are: covered {covered:.0%} of "
                            f"{int(core.sum())} px, {stray:.0%} of the overlay elsewhere")
    return problems


def _deposit_discs(c: dict[str, Any], spec: dict[str, Any]) -> tuple[list[Any], list[float], float]:
    px = np.asarray(c["matrix_pixels"][spec["deposit_index"]:], float)
    centres, rims = px[0::2], px[1::2]
    radii = np.hypot(*(rims - centres).T)
    scale = float(radii[0] / (DEPOSITS[0][2] / 2))  # viewport px per mm
    return [tuple(p) for p in centres], radii.tolist(), scale


def check_deposits(c: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """Synthetic slide: the tumour segment sits on the known deposits and nowhere else; the
    heatmap bands sit around them (within one classifier patch and its halo)."""
    centres, radii, scale = _deposit_discs(c, spec)
    base, shape = c["shots"]["slide"], _rgb(c["shots"]["slide"]).shape[:2]
    by_label = {s["label"]: s["number"] for s in c["segments"]}
    tumour = overlay(base, c["shots"][f"segment{by_label['Neoplasm, Secondary']}"])
    near = disc_mask(shape, centres, [r + MARGIN_MM * scale for r in radii])
    problems = []
    stray = float((tumour & ~near).sum() / max(tumour.sum(), 1))
    c["deposit_checks"] = {"tumour_stray": round(stray, 3), "covered": []}
    if stray > 0.02:
        problems.append(f"{stray:.1%} of the tumour overlay lies away from the known deposits")
    for k, (centre, r) in enumerate(zip(centres, radii, strict=True)):
        core = disc_mask(shape, [centre], [r - MARGIN_MM * scale])
        covered = float((tumour & core).sum() / max(core.sum(), 1))
        c["deposit_checks"]["covered"].append(round(covered, 3))
        if covered < 0.9:
            problems.append(f"deposit {k + 1} at {DEPOSITS[k][:2]} mm: tumour overlay covers {covered:.0%}")
    bands = np.zeros(shape, bool)
    for label, number in by_label.items():
        if label.startswith("Heatmap"):
            bands |= overlay(base, c["shots"][f"segment{number}"])
    band_near = disc_mask(shape, centres, [r + BAND_MARGIN_MM * scale for r in radii])
    band_stray = float((bands & ~band_near).sum() / max(bands.sum(), 1))
    c["deposit_checks"]["band_stray"] = round(band_stray, 3)
    if not (bands & disc_mask(shape, centres[:1], radii[:1])).any():
        problems.append("no heatmap band is drawn over the micrometastasis")
    if band_stray > 0.02:
        problems.append(f"{band_stray:.1%} of the heatmap bands lie away from the deposits")
    return problems


SIZE_CLASSES = {"itc": "Isolated tumour cells", "micro": "Micrometastasis", "macro": "Macrometastasis"}


def check_rois(c: dict[str, Any], spec: dict[str, Any], findings: dict[str, Any]) -> list[str]:
    """The viewer lists one ROI per deposit with its size class and area, and draws each
    outline where the SR's coordinates put it (and nowhere else)."""
    from PIL import ImageDraw

    problems = []
    deposits = {f"deposit {d['number']}": d for d in findings["deposits"]}
    rois = {r["label"]: r for r in c["rois"]}
    if sorted(rois) != sorted(deposits):
        problems.append(f"the viewer lists ROIs {sorted(rois)}, the SR has {sorted(deposits)}")
    for label, d in deposits.items():
        roi = rois.get(label, {"evaluations": [], "measurements": [], "graphicType": None})
        classes = [e["value"]["meaning"] for e in roi["evaluations"] if e["value"]]
        areas = [m for m in roi["measurements"] if m["name"]["meaning"] == "Area"]
        if SIZE_CLASSES[d["class"]] not in classes:
            problems.append(f"{label}: size class {SIZE_CLASSES[d['class']]!r} not among its evaluations {classes}")
        # dicom-microscopy-viewer recomputes "Area" from the outline and replaces ours with
        # it: mm² x 1000, labelled with the view's unit (its own bug, see the docstring). Its
        # value must still agree with our area: the outline is the region we measured.
        if not areas or abs(areas[0]["value"] / 1000 - d["area_mm2"]) > 1e-5 + 0.03 * d["area_mm2"]:
            problems.append(f"{label}: the viewer's area of the outline {areas[:1]} does not match "
                            f"the SR's {d['area_mm2']} mm2")
        lengths = [m for m in roi["measurements"] if m["name"]["meaning"] == "Long axis"]
        size = d["largest_dimension_mm"]
        if not lengths or lengths[0]["unit"]["value"] != "mm" or abs(lengths[0]["value"] - size) > 1e-3:
            problems.append(f"{label}: largest dimension {lengths[:1]} is not {d['largest_dimension_mm']} mm")
        if roi["graphicType"] != "POLYGON":
            problems.append(f"{label}: graphic type {roi['graphicType']}")
    drawn = green(c["shots"]["slide"], c["shots"]["sr"])
    near = ndimage.binary_dilation(drawn, iterations=4)
    pts = np.asarray(c["slide_pixels"], float)
    lines = Image.new("1", (drawn.shape[1], drawn.shape[0]))
    k, c["outline_hits"] = 0, {}
    for label, n in spec["outline_order"].items():
        p = pts[k : k + n]
        k += n
        ImageDraw.Draw(lines).line([tuple(q) for q in p], fill=1, width=1)
        q = np.round(p).astype(int)
        ok = (q[:, 0] >= 0) & (q[:, 1] >= 0) & (q[:, 0] < drawn.shape[1]) & (q[:, 1] < drawn.shape[0])
        hit = float(near[q[ok, 1], q[ok, 0]].sum() / len(q))
        c["outline_hits"][label] = round(hit, 3)
        if hit < 0.8:
            problems.append(f"{label}: only {hit:.0%} of its outline points have the drawn outline nearby")
    stray = float((drawn & ~ndimage.binary_dilation(np.asarray(lines, bool), iterations=6)).sum() / max(drawn.sum(), 1))
    c["outline_stray"] = round(stray, 3)
    if not drawn.any() or stray > 0.05:
        problems.append(f"ROI outlines drawn elsewhere: {stray:.0%} of {int(drawn.sum())} outline px")
    return problems


def check_outlines_on_deposits(c: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """Synthetic slide: each SR outline, as the viewer maps it, runs along a known deposit's rim."""
    centres, radii, scale = _deposit_discs(c, spec)
    pts, k, problems = np.asarray(c["slide_pixels"], float), 0, []
    for label, n in spec["outline_order"].items():
        p = pts[k : k + n]
        k += n
        d = np.array([np.hypot(*(p - np.asarray(ctr)).T) - r for ctr, r in zip(centres, radii, strict=True)])
        best = int(np.argmin(np.abs(d).mean(axis=1)))
        on_rim = float((np.abs(d[best]) <= MARGIN_MM * scale + 2).mean())
        if on_rim < 0.95:
            problems.append(f"{label}: {on_rim:.0%} of its outline on the rim of deposit {best + 1}")
    return problems


# ------------------------------------------------------------------------------ the test


def _web_root(tmp: Path) -> Path:
    """The page's files on one folder: the library's dist, dicomweb-client, our page."""
    root = tmp / "web"
    (root / "static" / "js").mkdir(parents=True)
    for item in DMV_DIST.iterdir():
        (root / item.name).symlink_to(item)
    # the bundle starts its frame-decoding worker (a module worker) from Slim's layout,
    # /static/js/dataLoader.worker.min.js: the dynamic-import build's worker and codecs
    for item in (DMV_DIST / "dynamic-import").iterdir():
        (root / "static" / "js" / item.name).symlink_to(item)
    (root / "dicomweb-client.js").symlink_to(DWC_JS)
    for name in ("index.html", "dmv_page.js"):
        (root / name).symlink_to(HERE / "dmv" / name)
    return root


def test_microscopy_viewer_shows_slide_seg_and_sr(tmp_path: Path, testdata: Path) -> None:
    from ohif_proxy import ViewerServer

    from dicomnode.synth.wsi import generate_slide

    assert private_netns(), "run inside `unshare -n` (Orthanc binds all interfaces)"
    assert DMV_DIST.is_dir() and DWC_JS.is_file(), f"no dicom-microscopy-viewer in {CACHE / 'dmv'} (viewer-deps)"
    node = shutil.which("node")
    assert node and (NODE_MODULES / "playwright-core").is_dir() and Path(CHROMIUM).is_file()
    pipe = _pipeline()
    slide = generate_slide(tmp_path / "synthetic", 41, size_mm=(3.0, 3.0), mpp=MPP, deposits=DEPOSITS)
    cmu = sorted((testdata / "wsi" / "cmu1-small-region-pyramid-wsidicomizer").glob("*.dcm"))
    cases = {"synthetic": (slide.files, *_run(pipe, slide.files, tmp_path / "out-synthetic")),
             "cmu1": (cmu, *_run(pipe, cmu, tmp_path / "out-cmu1"))}
    specs = {name: _case(name, files, seg, sr) for name, (files, seg, sr, _) in cases.items()}
    out = OUT / "microscopy"
    if out.exists():
        shutil.rmtree(out)
    orthanc, server = Orthanc(tmp_path / "orthanc").start(), None
    try:
        _upload(orthanc, [p for files, seg, sr, _ in cases.values() for p in (*files, seg, sr)])
        server = ViewerServer(_web_root(tmp_path), HERE / "dmv" / "index.html", orthanc.url, port=free_port()).start()
        spec = {"url": server.url, "out": str(out), "timeout_ms": TIMEOUT_S * 1000, "node_modules": str(NODE_MODULES),
                "chromium": CHROMIUM, "cases": list(specs.values())}
        proc = subprocess.run([node, str(HERE / "microscopy_check.cjs"), json.dumps(spec)],
                              capture_output=True, text=True, timeout=6 * TIMEOUT_S)
        print(proc.stdout[-6000:], proc.stderr[-3000:])
    finally:
        if server is not None:
            server.stop()
        orthanc.stop()
    _assert_run(json.loads((out / "microscopy.json").read_text()), cases, specs, out)


def _assert_run(run: dict[str, Any], cases: dict[str, Any], specs: dict[str, Any], out: Path) -> None:
    problems: list[str] = [f"page error: {e[:300]}" for e in run["page_errors"]]
    for name, (files, seg, _sr, findings) in cases.items():
        c = run["cases"].get(name, {})
        if "error" in c or "rois" not in c:
            problems.append(f"{name}: browser run failed: {c.get('error', 'not reached')[:1500]}")
            continue
        level0 = _level0(files)
        spacing = float(level0.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0])
        found = check_slide(c) + check_segments(c, specs[name], seg, spacing) + check_rois(c, specs[name], findings)
        if name == "synthetic":
            found += check_deposits(c, specs[name]) + check_outlines_on_deposits(c, specs[name])
        found += [f"viewer error: {e}" for e in c.get("viewer_errors", [])]
        found += [f"Slim would not show it: {r}" for r in c.get("slim_rejects", ["not checked"])]
        problems += [f"{name}: {p}" for p in found]
    summary = {name: {k: v for k, v in c.items() if k not in ("matrix_pixels", "slide_pixels")}
               for name, c in run["cases"].items()}
    summary["problems"] = problems
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1)[-8000:])
    assert not problems, "microscopy check failed:\n- " + "\n- ".join(problems)
