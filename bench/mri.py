"""MRI pipeline overhead: bare nnUNetPredictor vs the whole mri-lln pipeline, one run.

For the same model (models/lln-t2-demo) and the same volume (the real 40-slice 320x320 T2
axial prostate series in ../shared/testdata):

(a) bare: nnU-Net's own ``nnUNetPredictor`` (built once, like a worker) predicting the
    series read by SimpleITK's DICOM series reader;
    also (a') the same with nnU-Net's own I/O, as a site would run it without dicomnode:
    read the DICOM series (SimpleITK), predict, write the label map (.nii.gz, nnU-Net's
    SimpleITKIO);
(b) pipeline: ``MriLlnPipeline.run`` + writing the outputs, i.e. from series complete to
    SEG + SR on disk (volume building, inference, findings, SEG/SR build and validation),
    split into the model call (``NnUNetRunner.predict``) and everything else.

Reports medians and the ratios (b)/(a) and (b)/(a'). Not a test: no thresholds here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SERIES = REPO.parent / "shared" / "testdata" / "mr" / "prostate-t2-axial-siemens-verio"
BUNDLE = REPO / "models" / "lln-t2-demo"


def bare_predictor(threads: int) -> tuple[object, object, list[float]]:
    import SimpleITK as sitk
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from dicomnode.inference.manifest import load_bundle

    torch.set_num_threads(threads)
    bundle = load_bundle(BUNDLE)
    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), verbose=False,
                                allow_tqdm=False, perform_everything_on_device=False)
    predictor.initialize_from_trained_model_folder(str(BUNDLE / bundle.input.get("model_folder", "nnunet")),
                                                   use_folds=tuple(bundle.input.get("folds", [0])),
                                                   checkpoint_name=bundle.input.get("checkpoint",
                                                                                    "checkpoint_final.pth"))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(SERIES)))
    image = reader.Execute()
    array = sitk.GetArrayFromImage(image).astype("float32")[None]
    props = {"spacing": list(image.GetSpacing())[::-1]}
    return predictor, (array, props), []


def time_bare(predictor, data, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.predict_single_npy_array(data[0], data[1])  # type: ignore[attr-defined]
        times.append(time.perf_counter() - started)
    return times


def time_bare_with_io(predictor, repeats: int) -> list[float]:
    """(a'): DICOM series read + predict + label map written, nnU-Net's own way."""
    import SimpleITK as sitk

    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(SERIES)))
            image = reader.Execute()
            array = sitk.GetArrayFromImage(image).astype("float32")[None]
            labels = predictor.predict_single_npy_array(array, {"spacing": list(image.GetSpacing())[::-1]})  # type: ignore[attr-defined]
            out = sitk.GetImageFromArray(labels.astype("uint8"))
            out.CopyInformation(image)
            sitk.WriteImage(out, str(Path(tmp) / "labels.nii.gz"), useCompression=True)
            times.append(time.perf_counter() - started)
    return times


def time_pipeline(repeats: int, threads: int) -> tuple[list[float], list[float], dict]:
    import torch

    from dicomnode.inference.manifest import load_bundle
    from dicomnode.pipelines import create_pipeline
    from dicomnode.pipelines.base import PipelineContext
    from dicomnode.worker_child import write_result

    torch.set_num_threads(threads)
    pipeline = create_pipeline("mri-lln", load_bundle(BUNDLE), {"device": "cpu"})
    model_s: list[float] = []
    predict = pipeline.runner.predict  # type: ignore[attr-defined]

    def timed_predict(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        started = time.perf_counter()
        try:
            return predict(*args, **kwargs)
        finally:
            model_s.append(time.perf_counter() - started)

    pipeline.runner.predict = timed_predict  # type: ignore[attr-defined]
    files = sorted(SERIES.glob("*.dcm"))
    times, findings = [], {}
    for i in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "outputs"
            out.mkdir()
            ctx = PipelineContext(pipeline="mri-lln", study_uid="bench", series_uid=f"1.2.3.{i}", workdir=Path(tmp))
            started = time.perf_counter()
            result = pipeline.run(files, ctx)
            write_result(result, out)
            times.append(time.perf_counter() - started)
            findings = dict(result.findings)
    return times, model_s, findings


def main() -> int:
    parser = argparse.ArgumentParser(description="bare nnUNetPredictor vs mri-lln pipeline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not (BUNDLE / "model.yaml").is_file() or not SERIES.is_dir():
        print(f"bench/mri.py needs {BUNDLE} and {SERIES}", file=sys.stderr)
        return 1
    predictor, data, _ = bare_predictor(args.threads)
    time_bare(predictor, data, 1)  # warm-up, as a warm worker would be
    bare = time_bare(predictor, data, args.repeats)
    bare_io = time_bare_with_io(predictor, args.repeats)
    time_pipeline(1, args.threads)
    pipe, model, findings = time_pipeline(args.repeats, args.threads)
    med = {k: statistics.median(v) for k, v in (("bare", bare), ("bare_io", bare_io), ("pipe", pipe))}
    outside = statistics.median(p - m for p, m in zip(pipe, model, strict=True))
    row = {"volume": "40 x 320 x 320 T2 (testdata)", "threads": args.threads,
           "bare_predictor_s": round(med["bare"], 3), "bare_with_io_s": round(med["bare_io"], 3),
           "pipeline_s": round(med["pipe"], 3), "pipeline_model_call_s": round(statistics.median(model), 3),
           "pipeline_outside_model_s": round(outside, 3),
           "ratio_pipeline_vs_bare": round(med["pipe"] / med["bare"], 3),
           "ratio_pipeline_vs_bare_with_io": round(med["pipe"] / med["bare_io"], 3),
           "bare_each": [round(t, 3) for t in bare], "pipeline_each": [round(t, 3) for t in pipe],
           "findings": {k: findings.get(k) for k in ("n_nodes", "lln_status")}}
    print(json.dumps(row))
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "mri.json").write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
