"""Browser check: OHIF 3.13.2 shows our MR SEG over the T2 series and the SR measurements.

Run with ``make test-viewer`` (tests/viewer/viewer.mk), which installs Debian ``chromium``,
``npm pack``s ``@ohif/app@3.13.2`` into ``.cache/ohif/`` and ``playwright-core`` into
``.cache/viewer-node/``, and runs this file inside ``unshare -n`` with
``DICOMNODE_VIEWER_TEST=1``. Without that variable the test is skipped (it takes minutes
with SwiftShader on two cores, so plain ``make test`` leaves it out).

What happens (no mocks):

1. a synthetic T2 pelvic study (``dicomnode.synth.mr.generate_case``) with positive and
   negative nodes; its ground-truth label map → ``build_outputs`` → BINARY SEG + TID 1500 SR;
2. MR series + SEG + SR → a real Orthanc (Debian, DICOMweb plugin) by C-STORE;
3. OHIF's prebuilt dist + tests/viewer/app-config.js served with a DICOMweb reverse proxy
   (tests/viewer/ohif_proxy.py) on one loopback origin;
4. tests/viewer/ohif_check.cjs drives headless chromium: open the study, double-click the
   SEG, click each node segment, double-click the SR; screenshots and DOM texts;
5. assertions here: segment colours appear in the viewport only after the SEG is loaded
   (regions red/green/purple, positive node yellow, negative node blue), the viewer SR's
   text boxes read cleanly — the node caption ("LN-1 right obturator lymph node,
   negative:") and "Short axis: 4.85 mm" / "Long axis: 8.08 mm", no line that is neither,
   no bare concept code such as "363698007: obturator lymph node" — and the console has no
   OHIF crash.

``VIEWER_VARIANT`` changes the uploaded objects, to show that the test can fail and to try
fixes: ``sr-no-planar`` (SR without its planar groups: OHIF's ReferencedSOPSequence crash),
``seg-other-series`` (SEG+SR built on another series that is not in the PACS),
``sr-planar-only`` (SR reduced to its TID 1410 SCOORD groups, the viewer SR before issue 14:
OHIF shows "363698007: obturator lymph node", which the label check reports),
``sr-merged-nodes`` (each node's planar groups share its volumetric group's Tracking UID,
summary group left out).
Screenshots and ``result.json`` go to ``VIEWER_OUT/ohif`` (default ``tests/viewer/out/ohif``).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from netutil import free_port
from orthanc import Orthanc, private_netns
from pydicom.dataset import Dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("VIEWER_CACHE", REPO / ".cache"))
DIST = CACHE / "ohif" / "package" / "dist"
NODE_MODULES = CACHE / "viewer-node" / "node_modules"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
OUT = Path(os.environ.get("VIEWER_OUT", HERE / "out")) / "ohif"  # beside microscopy/ (test_microscopy.py)
VARIANT = os.environ.get("VIEWER_VARIANT", "")
TIMEOUT_S = int(os.environ.get("VIEWER_TIMEOUT_S", "240"))

# console/page errors that mean OHIF failed on our objects
CRASH_PATTERNS = (
    "Cannot read properties of undefined",
    "Cannot read properties of null",
    "is not a function",
    "Unsupported displaySet",
    "not yet supported",
    "Failed to load segmentation",
    "Error loading",
    "Something went wrong",
)

# ------------------------------------------------------------------------------ inputs


def _bundle() -> Any:
    """The committed demo bundle (its labels, thresholds, identity and clinical-use flag)."""
    from dicomnode.inference.manifest import load_bundle

    return load_bundle(REPO / "models" / "lln-t2-demo")


def _write(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(datasets):
        paths.append(folder / f"{k:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def _outputs(seed: int, folder: Path, study_uid: str | None = None) -> tuple[list[Path], Any]:
    """A synthetic T2 series (written) and build_outputs() of its ground-truth labels."""
    from dicomnode.dicom.volume import load_volume
    from dicomnode.pipelines.base import PipelineContext
    from dicomnode.pipelines.mri_lln import build_outputs
    from dicomnode.synth.mr import generate_case

    case = generate_case(seed, oblique_deg=12.0, n_nodes=4)
    if study_uid is not None:
        for ds in case.datasets:
            ds.StudyInstanceUID = study_uid
    paths = _write(case.datasets, folder)
    first = case.datasets[0]
    ctx = PipelineContext("mri-lln", first.StudyInstanceUID, first.SeriesInstanceUID, folder,
                          job_id=f"viewer-{seed}")
    return paths, build_outputs(load_volume(paths), case.labels, _bundle(), ctx, case.datasets)


def _own_series(sr: Dataset) -> None:
    """A variant SR in a series of its own (in the full SR's series OHIF would open that one)."""
    import highdicom as hd

    sr.SeriesInstanceUID, sr.SeriesNumber, sr.SeriesDescription = hd.UID(), 909, "LLN SR variant"


def _filter_groups(sr: Dataset, *, with_coordinates: bool) -> Dataset:
    """SR copy keeping only the measurement groups with (or without) SCOORD/SCOORD3D items."""
    import highdicom as hd

    sr = copy.deepcopy(sr)
    for item in sr.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue != "126010":  # Imaging Measurements
            continue
        item.ContentSequence = [g for g in item.ContentSequence if with_coordinates == any(
            c.ValueType in ("SCOORD", "SCOORD3D") for c in g.get("ContentSequence", []))]
    sr.SOPInstanceUID = hd.UID()
    _own_series(sr)
    return sr


def _merge_node_groups(sr: Dataset) -> Dataset:
    """SR copy where each node's planar groups reuse its volumetric group's Tracking UID
    (OHIF merges groups by that UID) and the coordinate-less summary group is left out."""
    import highdicom as hd

    sr = copy.deepcopy(sr)

    def tracking(group: Dataset) -> tuple[Dataset | None, Dataset | None]:
        items = {c.ConceptNameCodeSequence[0].CodeValue: c for c in group.get("ContentSequence", [])}
        return items.get("112039"), items.get("112040")

    for item in sr.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue != "126010":
            continue
        uids = {}
        for g in item.ContentSequence:
            ident, uid = tracking(g)
            if ident is not None and " " not in str(ident.TextValue):  # "LN-1": volumetric
                uids[str(ident.TextValue)] = uid.UID
        kept = []
        for g in item.ContentSequence:
            ident, uid = tracking(g)
            node = str(ident.TextValue).split(" ")[0] if ident is not None else ""
            if node in uids:
                uid.UID = uids[node]
                kept.append(g)
        item.ContentSequence = kept
    sr.SOPInstanceUID = hd.UID()
    _own_series(sr)
    return sr


# ------------------------------------------------------------------------------ helpers


def _c_store(orthanc: Orthanc, datasets: list[Dataset]) -> None:
    from pynetdicom import AE

    ae = AE(ae_title="DICOMNODE")
    for sop in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop, [str(datasets[0].file_meta.TransferSyntaxUID),
                                       "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title="ORTHANC")
    assert assoc.is_established, "no association with Orthanc"
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status and status.Status == 0, f"C-STORE {ds.Modality} failed: {status}"
    finally:
        assoc.release()


_COLOURS = {  # a pixel "is" a colour when its chroma points that way (blended over grey MR)
    "yellow": lambda r, g, b: (r - b > 50) & (g - b > 50) & (abs(r - g) < 40),
    "blue": lambda r, g, b: (b - r > 50) & (b - g > 50),
    "red": lambda r, g, b: (r - g > 50) & (r - b > 50),
    "green": lambda r, g, b: (g - r > 50) & (g - b > 50),
    "purple": lambda r, g, b: (r - g > 25) & (b - g > 25) & (abs(r - b) < 40),
}


def _rgb(png: str | Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def colour_counts(png: str | Path, margin: int = 40) -> dict[str, int]:
    """Pixels of each segment colour in a viewport screenshot, leaving out a ``margin``
    (OHIF's blue viewport border, its corner icons and overlay text)."""
    rgb = _rgb(png)[margin:-margin, margin:-margin]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return {name: int(test(r, g, b).sum()) for name, test in _COLOURS.items()}


def grey_fraction(png: str | Path, margin: int = 40) -> float:
    rgb = _rgb(png)[margin:-margin, margin:-margin]
    return float((np.ptp(rgb, axis=-1) < 12).mean())


_AXIS_LINE = re.compile(r"^(Short|Long) axis: \d+\.\d\d mm$")
_CODE_LEAK = re.compile(r"(^|\s)\d{5,18}:")  # "363698007: obturator lymph node"


def _captions(sr: Dataset) -> list[str]:
    """The node captions (Comment items) of the SR that OHIF is shown."""
    return [str(it.TextValue) for c in sr.ContentSequence if c.ValueType == "CONTAINER"
            for g in c.get("ContentSequence", []) for it in g.get("ContentSequence", [])
            if it.ValueType == "TEXT" and it.ConceptNameCodeSequence[0].CodeValue == "121106"]


def sr_label_problems(boxes: list[list[str]], captions: list[str]) -> list[str]:
    """What is wrong with the SR text OHIF drew (``boxes``: the lines of each SVG text box):
    a box reads "<caption>:" then "Short axis: 4.85 mm" / "Long axis: 8.08 mm"; a concept
    code never shows."""
    lines = [line for box in boxes for line in box]
    svg = boxes
    problems = []
    leaks = [t for t in lines if _CODE_LEAK.search(t)]
    if leaks:
        problems.append(f"a concept code shows in the SR labels: {leaks}")
    if not any(_AXIS_LINE.match(t) for t in lines):
        problems.append(f"no SR axis measurement with its unit drawn; viewport SVG texts: {svg}")
    shown = [t for t in lines if t.rstrip(":") in captions]
    if not shown:
        problems.append(f"no node caption (tracking id, side, station, status) drawn; texts {svg}, "
                        f"captions {captions}")
    odd = [t for t in lines if not _AXIS_LINE.match(t) and t.rstrip(":") not in captions]
    if odd:
        problems.append(f"SR text lines that are neither a caption nor an axis: {odd}")
    return problems


def _crashes(result: dict[str, Any]) -> list[str]:
    # OHIF logs its route error boundary at *debug* level: look at every console line
    lines = list(result["page_errors"]) + [m["text"] for m in result["console"]]
    return [line for line in lines if any(p in line for p in CRASH_PATTERNS)]


# ------------------------------------------------------------------------------ the test


def test_ohif_shows_seg_and_sr(tmp_path: Path) -> None:
    started = time.monotonic()
    assert private_netns(), "run inside `unshare -n` (Orthanc binds all interfaces)"
    assert (DIST / "index.html").is_file(), f"no OHIF dist at {DIST} (make -f tests/viewer/viewer.mk viewer-deps)"
    assert (NODE_MODULES / "playwright-core").is_dir(), f"no playwright-core in {NODE_MODULES}"
    assert Path(CHROMIUM).is_file(), f"no chromium at {CHROMIUM}"
    node = shutil.which("node")
    assert node, "node not found"

    # 1. a study with positive and negative nodes, its SEG + SR
    for seed in range(4, 40):
        mr_paths, result = _outputs(seed, tmp_path / f"mr{seed}")
        nodes = result.findings["nodes"]
        if {n["status"] for n in nodes} == {"positive", "negative"}:
            break
    else:  # pragma: no cover - generator changed
        pytest.fail("no synthetic case with both positive and negative nodes")
    seg, full_sr, sr = result.datasets  # sr: the planar-only viewer SR the user opens in OHIF
    mr = [pydicom.dcmread(p) for p in mr_paths]
    study = str(mr[0].StudyInstanceUID)
    if VARIANT == "sr-no-planar":  # only the volumetric + summary groups
        sr = _filter_groups(full_sr, with_coordinates=False)
    elif VARIANT == "sr-planar-only":  # only the planar (SCOORD) groups
        sr = _filter_groups(full_sr, with_coordinates=True)
    elif VARIANT == "sr-merged-nodes":  # one Tracking UID per node, no summary group
        sr = _merge_node_groups(full_sr)
    elif VARIANT == "seg-other-series":  # derived objects of a series the PACS does not have
        _, other = _outputs(seed + 100, tmp_path / "other", study_uid=study)
        seg, full_sr, sr = other.datasets
    elif VARIANT:
        pytest.fail(f"unknown VIEWER_VARIANT {VARIANT!r}")
    labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    positive = [s for s in labels if s.endswith("LN positive")]
    negative = [s for s in labels if s.endswith("LN negative")]
    print(f"seed {seed}: study {study}, {len(mr)} MR slices, segments {labels}")

    # 2. PACS, 3. viewer origin, 4. browser
    from ohif_proxy import ViewerServer

    orthanc = Orthanc(tmp_path / "orthanc").start()
    server = None
    try:
        _c_store(orthanc, [*mr, seg, full_sr, sr])
        stored = {m: len(orthanc.instances(m)) for m in ("MR", "SEG", "SR")}
        assert stored == {"MR": len(mr), "SEG": 1, "SR": 2}, stored
        server = ViewerServer(DIST, HERE / "app-config.js", orthanc.url, port=free_port()).start()
        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        spec = {
            "url": server.url, "study": study, "out": str(OUT), "timeout_ms": TIMEOUT_S * 1000,
            "seg_series": str(seg.SeriesDescription), "sr_series": str(sr.SeriesDescription),
            "segments": labels, "node_segments": [positive[0], negative[0]],
            "node_modules": str(NODE_MODULES), "chromium": CHROMIUM,
        }
        proc = subprocess.run([node, str(HERE / "ohif_check.cjs"), json.dumps(spec)],
                              capture_output=True, text=True, timeout=6 * TIMEOUT_S)
        print(proc.stdout[-6000:], proc.stderr[-3000:])
    finally:
        if server is not None:
            server.stop()
        orthanc.stop()

    run = json.loads((OUT / "result.json").read_text())
    crashes = _crashes(run)
    summary: dict[str, Any] = {"seed": seed, "study": study, "variant": VARIANT, "segments": labels,
                               "crashes": crashes, "page_errors": run["page_errors"][:5]}
    problems: list[str] = []  # every check is made; all failures are reported together
    try:
        if not run.get("ok"):
            problems.append(f"browser run failed: {run.get('error', '')[:1500]}")
        if crashes:
            problems.append(f"OHIF crashed (console): {crashes[0][:300]}")
        shots = run["shots"]
        # SEG: the viewport is grey before and shows the segment colours after loading it
        if "1_mr_viewport" in shots:
            before = colour_counts(shots["1_mr_viewport"])
            summary["colours_before_seg"] = before
            if sum(before.values()) > 50 or grey_fraction(shots["1_mr_viewport"]) < 0.95:
                problems.append(f"the MR viewport is not grey before the SEG: {before}")
        if "2_seg_viewport" in shots:
            after = colour_counts(shots["2_seg_viewport"])
            summary["colours_after_seg"] = after
            if not [c for c in ("red", "green", "purple") if after[c] > 200]:
                problems.append(f"no nodal-region colour after loading the SEG: {after}")
            panel = run["texts"]["after_seg"]["body"]
            missing = [s for s in labels if s not in panel]
            if missing:
                problems.append(f"segment labels missing from the segmentation panel: {missing}")
        else:
            problems.append("the SEG was not loaded")
        nodes = {s["label"]: s for s in run.get("node_shots", [])}
        summary["colours_node_shots"] = {}
        for label, colour in ((positive[0], "yellow"), (negative[0], "blue")):
            shot = nodes.get(label, {"error": "not reached"})
            if "file" not in shot:
                problems.append(f"could not select segment {label!r}: {shot.get('error')}")
                continue
            counts = colour_counts(shot["file"])
            summary["colours_node_shots"][label] = counts
            if counts[colour] <= 30:
                problems.append(f"{colour} node {label!r} not drawn: {counts}")
        # SR: the node groups are drawn with clean labels (no bare concept code)
        boxes = run["texts"].get("after_sr", {}).get("svg_lines", [])
        summary["sr_svg_lines"] = boxes
        problems += sr_label_problems(boxes, _captions(sr))
        summary["problems"] = problems
        assert not problems, "OHIF check failed:\n- " + "\n- ".join(problems)
    finally:
        summary["test_s"] = round(time.monotonic() - started, 1)
        (OUT / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary, indent=1))
