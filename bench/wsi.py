"""WSI benchmark: decode limit vs pipeline, gated vs dense, memory vs slide size; one run.

(a) pure tile read + JPEG decode of the tissue tiles (wsidicom ``read_encoded_tile`` +
    Pillow decode, one thread) — the CPU limit — counted twice: the tiles of the level the
    classifier reads, and the level-0 tiles (what a 0.5 µm/px model like the study's reads);
(b) the pipeline's throughput on the same slide in those tissue tiles per second
    (whole ``run``: tissue, classifier, gated segmenter, SEG + SR + preview);
(c) dense (segmenter on every tissue patch) vs gated mode on a node-negative and a
    node-positive synthetic slide: segmenter calls and wall time;
(d) peak RSS of a pipeline run (in a fresh process) on a small and a 10x larger slide.

Synthetic slides come from ``dicomnode.synth.wsi`` (cached under /tmp between runs).
Demo models: models/wsi-ln-demo. Not a test: no thresholds.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CACHE = Path(tempfile.gettempdir()) / "dicomnode-bench-wsi"
BUNDLE = REPO / "models" / "wsi-ln-demo"
SLIDES = {
    "positive": dict(seed=901, size_mm=(3.0, 3.0), deposits=[(1.0, 1.0, 0.8), (2.1, 2.2, 0.15)]),
    "negative": dict(seed=902, size_mm=(3.0, 3.0), deposits=[]),
    "small": dict(seed=903, size_mm=(2.0, 2.0), deposits=[(1.0, 1.0, 0.5)]),
    "large10x": dict(seed=903, size_mm=(6.32, 6.32), deposits=[(1.0, 1.0, 0.5)]),
}


def slide(name: str):  # noqa: ANN201 - SyntheticSlide
    from dicomnode.synth.wsi import generate_slide

    folder = CACHE / name
    spec = dict(SLIDES[name])
    if not (folder / "done").exists():
        import shutil
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        generate_slide(folder, spec.pop("seed"), **spec)
        (folder / "done").write_text(f"{time.perf_counter() - started:.1f}")
    return sorted(p for p in folder.rglob("*.dcm"))


def decode_rate(files: list[Path], mpp: float) -> tuple[int, float]:
    """(tissue tiles, seconds) to read + decode the tissue tiles of the level nearest ``mpp``."""
    import numpy as np
    from PIL import Image
    from wsidicom import WsiDicom

    from dicomnode.pipelines.wsi_tissue import detect_tissue

    with WsiDicom.open(files) as wsi:
        level = min(wsi.levels, key=lambda lv: abs(lv.mpp.width - mpp))
        tile_w, tile_h = level.tile_size.width, level.tile_size.height
        cols, rows = math.ceil(level.size.width / tile_w), math.ceil(level.size.height / tile_h)
        top = wsi.levels[-1]
        thumb = np.asarray(wsi.read_region((0, 0), top.level, (top.size.width, top.size.height)).convert("RGB"))
        tissue = detect_tissue(thumb, wsi.levels[-1].mpp.width).mask
        sy, sx = tissue.shape[0] / rows, tissue.shape[1] / cols
        keep = [(c, r) for r in range(rows) for c in range(cols)
                if tissue[int(r * sy):max(int(r * sy) + 1, int((r + 1) * sy)),
                          int(c * sx):max(int(c * sx) + 1, int((c + 1) * sx))].any()]
        started = time.perf_counter()
        for c, r in keep:
            Image.open(io.BytesIO(wsi.read_encoded_tile(level.level, (c, r)))).load()
        return len(keep), time.perf_counter() - started


def run_pipeline(files: list[Path], dense: bool) -> dict:
    from dicomnode.inference.manifest import load_bundle
    from dicomnode.pipelines import create_pipeline
    from dicomnode.pipelines.base import PipelineContext

    pipeline = create_pipeline("wsi-two-stage", load_bundle(BUNDLE), {"dense": dense})
    with tempfile.TemporaryDirectory() as tmp:
        ctx = PipelineContext(pipeline="wsi-two-stage", study_uid="b", series_uid="1.2.3", workdir=Path(tmp))
        started = time.perf_counter()
        result = pipeline.run(files, ctx)
        seconds = time.perf_counter() - started
    found = dict(result.findings)
    return {"seconds": round(seconds, 3), "segmenter_calls": found["segmenter_calls"],
            "classifier_patches": found["classifier_patches"], "class": found["class"]}


def peak_rss_mb(name: str) -> float:
    """Run the pipeline on slide ``name`` in a fresh process; its peak RSS in MiB."""
    code = (f"import resource,sys; sys.path.insert(0, {str(REPO)!r}); import bench.wsi as b; "
            f"b.run_pipeline(b.slide({name!r}), False); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description="WSI pipeline benchmark")
    parser.add_argument("--skip-rss", action="store_true", help="skip (d), which builds a 40 mm² slide")
    args = parser.parse_args()
    import yaml

    manifest = yaml.safe_load((BUNDLE / "model.yaml").read_text())
    cls_mpp = float(manifest["input"]["classifier"]["mpp"])
    rows: dict[str, object] = {}
    positive = slide("positive")
    run_pipeline(positive, False)  # warm-up: model load, caches
    gated = run_pipeline(positive, False)
    rows["b_pipeline"] = gated
    for label, mpp in (("classifier_level", cls_mpp), ("level0", 0.0)):
        tiles, decode_s = decode_rate(positive, mpp)
        rows[f"a_decode_{label}"] = {"tissue_tiles": tiles, "seconds": round(decode_s, 3),
                                     "tiles_per_s": round(tiles / decode_s, 1),
                                     "pipeline_tiles_per_s": round(tiles / gated["seconds"], 1),
                                     "ratio_b_over_a": round(decode_s / gated["seconds"], 3)}
    for name in ("negative", "positive"):
        files = slide(name)
        g, d = run_pipeline(files, False), run_pipeline(files, True)
        fraction = round(g["segmenter_calls"] / max(1, d["segmenter_calls"]), 3)
        rows[f"c_{name}"] = {"gated": g, "dense": d, "gated_calls_fraction_of_dense": fraction}
    if not args.skip_rss:
        rows["d_peak_rss_mb"] = {"small_4mm2": peak_rss_mb("small"), "large_40mm2": peak_rss_mb("large10x")}
    print(json.dumps(rows, indent=1))
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "wsi.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
