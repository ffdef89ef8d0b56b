"""WSI benchmark: decode limit vs pipeline, gated vs dense, memory vs slide size; one run.

(a) pure tile read + JPEG decode of the tissue tiles (wsidicom ``read_encoded_tile`` +
    Pillow decode) — the CPU limit — on one thread (the reference) and on all cores, counted
    in two framings: the tiles of the level the classifier reads, and the level-0 tiles
    (slide area: what a 0.5 µm/px model like the study's would decode);
(b) the pipeline's throughput on the same slide in those tissue tiles per second
    (whole ``run``: open, tissue, classifier, gated segmenter, SEG + SR + preview), with
    its per-step times; (a) and (b) are medians of ``--repeats`` runs after a warm-up run,
    on the 3 x 3 mm bench slide and on a 10 x 10 mm slide with a realistic lymph-node
    section (about 48 mm² of tissue);
(c) dense (segmenter on every tissue patch) vs gated mode on a node-negative and a
    node-positive synthetic slide: segmenter calls and wall time;
(d) peak RSS of a pipeline run (in a fresh process) on a small and a 10x larger slide.

Synthetic slides come from ``dicomnode.synth.wsi`` (cached under /tmp between runs; the
10 x 10 mm slide takes a few minutes to generate once). Demo models: models/wsi-ln-demo.
Not a test: no thresholds.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import save_results  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "dicomnode-bench-wsi"
BUNDLE = REPO / "models" / "wsi-ln-demo"
SLIDES = {
    "positive": dict(seed=901, size_mm=(3.0, 3.0), deposits=[(1.0, 1.0, 0.8), (2.1, 2.2, 0.15)]),
    "negative": dict(seed=902, size_mm=(3.0, 3.0), deposits=[]),
    "small": dict(seed=903, size_mm=(2.0, 2.0), deposits=[(1.0, 1.0, 0.5)]),
    "large10x": dict(seed=903, size_mm=(6.32, 6.32), deposits=[(1.0, 1.0, 0.5)]),
    # a realistic lymph-node section (about 8 x 7.6 mm of tissue) with three deposits
    "node10mm": dict(seed=904, size_mm=(10.0, 10.0), deposits=[(4.0, 4.5, 1.2), (6.5, 6.0, 0.4), (5.5, 3.0, 0.15)]),
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


def tissue_tiles(wsi, level) -> list[tuple[int, int]]:  # noqa: ANN001 - wsidicom objects
    """(column, row) of the tiles of ``level`` that overlap tissue (mask on the top level)."""
    import numpy as np

    from dicomnode.pipelines.wsi_two_stage.tissue import detect_tissue

    tile_w, tile_h = level.tile_size.width, level.tile_size.height
    cols, rows = math.ceil(level.size.width / tile_w), math.ceil(level.size.height / tile_h)
    top = wsi.levels[-1]
    thumb = np.asarray(wsi.read_region((0, 0), top.level, (top.size.width, top.size.height)).convert("RGB"))
    tissue = detect_tissue(thumb, top.mpp.width).mask
    sy, sx = tissue.shape[0] / rows, tissue.shape[1] / cols
    return [(c, r) for r in range(rows) for c in range(cols)
            if tissue[int(r * sy):max(int(r * sy) + 1, int((r + 1) * sy)),
                      int(c * sx):max(int(c * sx) + 1, int((c + 1) * sx))].any()]


def decode_rate(files: list[Path], mpp: float, repeats: int, threads: int = 1) -> tuple[int, float]:
    """(tissue tiles, median seconds) to read + decode the tissue tiles of the level nearest
    ``mpp``, on ``threads`` threads (Pillow releases the GIL while decoding)."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image
    from wsidicom import WsiDicom

    with WsiDicom.open(files) as wsi:
        level = min(wsi.levels, key=lambda lv: abs(lv.mpp.width - mpp))
        keep = tissue_tiles(wsi, level)

        def decode(tile: tuple[int, int]) -> None:
            Image.open(io.BytesIO(wsi.read_encoded_tile(level.level, tile))).load()

        times = []
        with ThreadPoolExecutor(threads) as pool:
            for _ in range(repeats):
                started = time.perf_counter()
                if threads == 1:
                    for tile in keep:
                        decode(tile)
                else:
                    list(pool.map(decode, keep, chunksize=16))
                times.append(time.perf_counter() - started)
        return len(keep), statistics.median(times)


def make_pipeline(dense: bool):  # noqa: ANN201 - WsiTwoStagePipeline
    """A pipeline with both ONNX sessions loaded, as a warm worker holds it."""
    from dicomnode.inference.manifest import load_bundle
    from dicomnode.pipelines import create_pipeline

    return create_pipeline("wsi-two-stage", load_bundle(BUNDLE), {"dense": dense})


def run_pipeline(files: list[Path], dense: bool, pipeline=None) -> dict:  # noqa: ANN001
    """One ``run`` (of a fresh pipeline unless one is given): seconds and findings."""
    from dicomnode.pipelines.base import PipelineContext

    pipeline = pipeline or make_pipeline(dense)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = PipelineContext(pipeline="wsi-two-stage", study_uid="b", series_uid="1.2.3", workdir=Path(tmp))
        started = time.perf_counter()
        result = pipeline.run(files, ctx)
        seconds = time.perf_counter() - started
    found = dict(result.findings)
    return {"seconds": round(seconds, 3), "segmenter_calls": found["segmenter_calls"],
            "classifier_patches": found["classifier_patches"], "class": found["class"],
            "steps_s": found["timings_s"]}


def throughput(name: str, cls_mpp: float, repeats: int) -> dict:
    """(a) and (b) on slide ``name``; (b) on one warm pipeline (a worker's), medians of
    ``repeats`` runs after a warm-up run."""
    files = slide(name)
    pipeline = make_pipeline(False)
    run_pipeline(files, False, pipeline)  # warm-up: first inference of each session, caches
    runs = [run_pipeline(files, False, pipeline) for _ in range(repeats)]
    seconds = statistics.median(r["seconds"] for r in runs)
    steps = {k: round(statistics.median(r["steps_s"][k] for r in runs), 3) for k in runs[-1]["steps_s"]}
    rows: dict[str, object] = {"b_pipeline": {**runs[-1], "seconds": round(seconds, 3), "steps_s": steps,
                                              "runs_s": [r["seconds"] for r in runs]}}
    cores = os.cpu_count() or 1
    for label, mpp in (("classifier_level", cls_mpp), ("level0", 0.0)):
        tiles, one = decode_rate(files, mpp, repeats)
        _, every = decode_rate(files, mpp, repeats, threads=cores)
        rows[f"a_decode_{label}"] = {"tissue_tiles": tiles, "seconds": round(one, 3),
                                     "tiles_per_s": round(tiles / one, 1),
                                     "seconds_all_cores": round(every, 3), "cores": cores,
                                     "pipeline_tiles_per_s": round(tiles / seconds, 1),
                                     "ratio_b_over_a": round(one / seconds, 3),
                                     "ratio_b_over_a_all_cores": round(every / seconds, 3)}
    return rows


def own_peak_rss_mb() -> float:
    """This process's peak RSS in MiB: VmHWM of its own address space.

    Not ``getrusage().ru_maxrss``: on Linux that keeps the high-water mark of the address
    space replaced by ``execve``, i.e. of the (v)forking parent, so a child started from
    this benchmark process would report the benchmark's own peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb(name: str) -> float:
    """Run the pipeline on slide ``name`` in a fresh process; its peak RSS in MiB."""
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import bench.wsi as b; "
            f"b.run_pipeline(b.slide({name!r}), False); print(b.own_peak_rss_mb())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description="WSI pipeline benchmark")
    parser.add_argument("--skip-rss", action="store_true", help="skip (d), which builds a 40 mm² slide")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure of (a) and (b)")
    args = parser.parse_args()
    import yaml

    manifest = yaml.safe_load((BUNDLE / "model.yaml").read_text())
    cls_mpp = float(manifest["input"]["classifier"]["mpp"])
    rows: dict[str, object] = {}
    for name, label in (("positive", "positive_3x3mm"), ("node10mm", "node_10x10mm")):
        rows[f"ab_{label}"] = throughput(name, cls_mpp, args.repeats)
    for name in ("negative", "positive"):
        files = slide(name)
        g, d = ({k: v for k, v in run_pipeline(files, dense).items() if k != "steps_s"} for dense in (False, True))
        fraction = round(g["segmenter_calls"] / max(1, d["segmenter_calls"]), 3)
        rows[f"c_{name}"] = {"gated": g, "dense": d, "gated_calls_fraction_of_dense": fraction}
    if not args.skip_rss:
        rows["d_peak_rss_mb"] = {"small_4mm2": peak_rss_mb("small"), "large_40mm2": peak_rss_mb("large10x")}
    print(json.dumps(rows, indent=1))
    save_results("wsi", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
