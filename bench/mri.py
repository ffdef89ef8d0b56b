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
    split into the model call (``NnUNetRunner.predict``) and everything else;
(c) with the node core: a real ``dicomnode serve`` (subprocess, warm worker) receives the
    series from dcmtk ``storescu`` and sends SEG + SR + viewer SR to a DIMSE PACS (pynetdicom
    SCP in this process); from the job's creation (series complete) to the last output
    received by the PACS. Each run sends a copy of the series with new UIDs.

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

from bench import free_port, save_results, wait_echo  # noqa: E402

SERIES = REPO.parent / "shared" / "testdata" / "mr" / "prostate-t2-axial-siemens-verio"
BUNDLE = REPO / "models" / "lln-t2-demo"


def bare_predictor(series: Path, threads: int) -> tuple[object, object, list[float]]:
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
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
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


def time_bare_with_io(predictor, series: Path, repeats: int) -> list[float]:
    """(a'): DICOM series read + predict + label map written, nnU-Net's own way."""
    import SimpleITK as sitk

    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
            image = reader.Execute()
            array = sitk.GetArrayFromImage(image).astype("float32")[None]
            labels = predictor.predict_single_npy_array(array, {"spacing": list(image.GetSpacing())[::-1]})  # type: ignore[attr-defined]
            out = sitk.GetImageFromArray(labels.astype("uint8"))
            out.CopyInformation(image)
            sitk.WriteImage(out, str(Path(tmp) / "labels.nii.gz"), useCompression=True)
            times.append(time.perf_counter() - started)
    return times


def time_pipeline(series: Path, repeats: int, threads: int) -> tuple[list[float], list[float], dict]:
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
    files = sorted(series.glob("*.dcm"))
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


def _series_copy(series: Path, folder: Path, run: int) -> tuple[str, list[Path]]:
    """The T2 series with a new Series/SOP Instance UIDs for run ``run`` (same pixels)."""
    import pydicom
    from pydicom.uid import generate_uid

    series_uid = generate_uid(entropy_srcs=["bench-mri-node", str(run)])
    paths = []
    for path in sorted(series.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(ds.SOPInstanceUID)])
        paths.append(folder / path.name)
        ds.save_as(paths[-1], enforce_file_format=True)
    return series_uid, paths


def _pacs(received: list[tuple[float, str]]):  # noqa: ANN202 - pynetdicom server
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt

    def handle(event) -> int:  # noqa: ANN001
        received.append((time.time(), str(event.request.AffectedSOPClassUID)))
        return 0x0000

    ae = AE(ae_title="PACS")
    for context in StoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    return ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])


def _node_config(tmp: Path, pacs_port: int, threads: int) -> tuple[Path, int]:

    import yaml

    node_port = free_port()
    config = {
        "node": {"port": node_port}, "spool": {"path": str(tmp / "spool"), "min_free_mb": 1},
        "models": {"lln-t2-demo": {"path": str(BUNDLE)}},
        "worker": {"device": "cpu"},
        "destinations": {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}},
        "routes": [{"name": "t2", "pipeline": "mri-lln", "model": "lln-t2-demo", "destinations": ["pacs"],
                    "settings": {"threads": threads},
                    "match": {"all": [{"tag": "Modality", "equals": "MR"}]}}],
        "http": {"port": free_port()}, "log": {"format": "json", "level": "INFO"},
    }
    path = tmp / "dicomnode.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, node_port


def _job_created(spool: Path, series_uid: str) -> float:
    for record in spool.glob("jobs/*/job.json"):
        job = json.loads(record.read_text())
        if job.get("series_uid") == series_uid:
            return float(job["created"])
    raise RuntimeError(f"no job for series {series_uid} in {spool}")


def time_node(series: Path, repeats: int, threads: int) -> list[float]:
    """(c): job created (series complete) → last of SEG, SR, viewer SR received by the PACS."""
    import subprocess

    received: list[tuple[float, str]] = []
    server = _pacs(received)
    times = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config, port = _node_config(tmp, server.server_address[1], threads)
        log = (tmp / "node.log").open("wb")
        node = subprocess.Popen([sys.executable, "-m", "dicomnode", "serve", "--config", str(config)],
                                stdout=log, stderr=log, cwd=REPO)
        try:
            try:
                wait_echo(port, "DICOMNODE", timeout_s=120)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; node log: {(tmp / 'node.log').read_text()[-2000:]}") from exc
            for run in range(repeats + 1):  # run 0 warms the worker (model load)
                (tmp / f"in{run}").mkdir()
                series_uid, paths = _series_copy(series, tmp / f"in{run}", run)
                before = len(received)
                subprocess.run(["storescu", "-aec", "DICOMNODE", "127.0.0.1", str(port), *map(str, paths)],
                               check=True, capture_output=True)
                while len(received) < before + 3:
                    if node.poll() is not None:
                        raise RuntimeError(f"node exited: {(tmp / 'node.log').read_text()[-2000:]}")
                    time.sleep(0.05)
                if run:
                    times.append(received[-1][0] - _job_created(tmp / "spool", series_uid))
        finally:
            node.terminate()
            node.wait(60)
            server.shutdown()
    return times


def measure(series: Path, label: str, args: argparse.Namespace) -> dict:
    """(a), (a'), (b) and unless --skip-node (c) for one series."""
    predictor, data, _ = bare_predictor(series, args.threads)
    time_bare(predictor, data, 1)  # warm-up, as a warm worker would be
    bare = time_bare(predictor, data, args.repeats)
    bare_io = time_bare_with_io(predictor, series, args.repeats)
    time_pipeline(series, 1, args.threads)
    pipe, model, findings = time_pipeline(series, args.repeats, args.threads)
    med = {k: statistics.median(v) for k, v in (("bare", bare), ("bare_io", bare_io), ("pipe", pipe))}
    outside = statistics.median(p - m for p, m in zip(pipe, model, strict=True))
    row = {"volume": label, "threads": args.threads,
           "bare_predictor_s": round(med["bare"], 3), "bare_with_io_s": round(med["bare_io"], 3),
           "pipeline_s": round(med["pipe"], 3), "pipeline_model_call_s": round(statistics.median(model), 3),
           "pipeline_outside_model_s": round(outside, 3),
           "ratio_pipeline_vs_bare": round(med["pipe"] / med["bare"], 3),
           "ratio_pipeline_vs_bare_with_io": round(med["pipe"] / med["bare_io"], 3),
           "bare_each": [round(t, 3) for t in bare], "pipeline_each": [round(t, 3) for t in pipe],
           "findings": {k: findings.get(k) for k in ("n_nodes", "lln_status")}}
    if not args.skip_node:
        node = time_node(series, args.repeats, args.threads)
        row["node_complete_to_pacs_s"] = round(statistics.median(node), 3)
        row["ratio_node_to_pacs_vs_bare"] = round(statistics.median(node) / med["bare"], 3)
        row["node_each"] = [round(t, 3) for t in node]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description="bare nnUNetPredictor vs mri-lln pipeline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-node", action="store_true", help="skip (c), the node and PACS run")
    parser.add_argument("--synthetic", action="store_true",
                        help="also a synthetic phantom of the same grid with 4 nodes (dicomnode.synth.mr)")
    args = parser.parse_args()
    if not (BUNDLE / "model.yaml").is_file() or not SERIES.is_dir():
        print(f"bench/mri.py needs {BUNDLE} and {SERIES}", file=sys.stderr)
        return 1
    rows = [measure(SERIES, "40 x 320 x 320 T2 (testdata)", args)]
    if args.synthetic:
        from dicomnode.synth.mr import generate_case

        with tempfile.TemporaryDirectory() as tmp:
            case = generate_case(31, shape=(40, 320, 320), spacing_mm=(3.0, 0.6, 0.6), n_nodes=4)
            case.write(Path(tmp))
            rows.append(measure(Path(tmp), "40 x 320 x 320 synthetic phantom, 4 nodes", args))
    row = rows[0] if len(rows) == 1 else rows
    print(json.dumps(row))
    save_results("mri", row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
