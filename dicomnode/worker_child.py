"""The worker child process: keeps pipelines warm and runs one job at a time.

Runs in a separate process (``spawn``) so a pipeline that hangs, crashes or leaks can be
killed and restarted without touching the DICOM listener. Models are loaded once per
child and reused for every job with the same (pipeline, model).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import signal
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from pydicom import dcmread

from dicomnode.errors import DicomNodeError, InputRefused
from dicomnode.executor import Outcome, Reply, RunRequest
from dicomnode.inference.manifest import ModelBundle, load_bundle
from dicomnode.log import bound, configure_logging
from dicomnode.outputs.not_analysed import build_not_analysed_sr
from dicomnode.pipelines import create_pipeline
from dicomnode.pipelines.base import Pipeline, PipelineContext, PipelineResult

__all__ = ["child_main", "write_result"]

log = logging.getLogger(__name__)


def write_result(result: PipelineResult, outputs: Path) -> list[str]:
    """Write output datasets and side files into ``outputs``; return the file names."""
    names = []
    for ds in result.datasets:
        name = f"{ds.Modality}-{ds.SOPInstanceUID}.dcm"
        data = result.encoded.get(str(ds.SOPInstanceUID))
        if data is None:
            ds.save_as(outputs / name, enforce_file_format=True)
        else:
            (outputs / name).write_bytes(data)
        names.append(name)
    for name, data in result.files.items():
        (outputs / name).write_bytes(data)
        names.append(name)
    (outputs / "findings.json").write_text(json.dumps(result.findings, indent=1, default=str))
    return names


def _refused(request: RunRequest, bundle: ModelBundle, files: list[Path], ctx: PipelineContext,
             exc: InputRefused, seconds: float) -> Reply:
    """The guard refused the series: the "not analysed" SR (unless the route is silent),
    findings that say why, and a ``REFUSED`` reply."""
    reasons = [f"{v['requirement']}: found {v['found']}, expected {v['expected']}"
               for v in exc.verdicts if not v.get("passed")] or [str(exc)]
    findings = {"model": {"id": bundle.id, "version": bundle.version}, "refused": True, "reasons": reasons,
                "input": {"accepted": False, "verdicts": list(exc.verdicts), "measures": exc.measures}}
    datasets = []
    encoded: dict[str, bytes] = {}
    if request.on_refused == "report":
        sources = [dcmread(f, stop_before_pixels=True) for f in files]
        uids = {k: ctx.uid(bundle, f"not-analysed.{k}") for k in ("series", "instance", "device")}
        datasets.append(build_not_analysed_sr(sources, bundle, reasons, uids, encoded=encoded))
    result = PipelineResult(datasets=datasets, findings=findings, encoded=encoded)
    names = write_result(result, Path(request.job_dir) / "outputs")
    log.warning("input refused (%s): %s", "not-analysed SR" if datasets else "silent", "; ".join(reasons))
    return Reply(Outcome.REFUSED, str(exc), outputs=names, findings=findings, seconds=seconds)


def _run(request: RunRequest, cache: dict[tuple[str, str], tuple[ModelBundle, Pipeline]]) -> Reply:
    key = (request.pipeline, request.model_path)
    if key not in cache:
        bundle = load_bundle(Path(request.model_path))
        cache[key] = bundle, create_pipeline(request.pipeline, bundle, request.settings)
    bundle, pipeline = cache[key]
    job_dir = Path(request.job_dir)
    files = sorted((job_dir / "input").glob("*.dcm"))
    ctx = PipelineContext(pipeline=request.pipeline, study_uid=request.study_uid, series_uid=request.series_uid,
                          workdir=job_dir / "work", uid_root=request.uid_root, job_id=request.job_id)
    ctx.workdir.mkdir(exist_ok=True)
    started = time.monotonic()
    try:
        result = pipeline.run(files, ctx)
    except InputRefused as exc:
        return _refused(request, bundle, files, ctx, exc, time.monotonic() - started)
    seconds = time.monotonic() - started
    names = write_result(result, job_dir / "outputs")
    return Reply(Outcome.DONE, outputs=names, findings=dict(result.findings), seconds=seconds)


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the node process dies (even by kill -9), so an orphaned
    child can never run a job concurrently with the restarted node's own child."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        log.warning("cannot tie the worker's life to the node's (not Linux?)")


def child_main(conn: Connection, log_format: str, log_level: str) -> None:
    """Serve job requests from ``conn`` until it is closed."""
    _die_with_parent()
    configure_logging(log_format, log_level)
    cache: dict[tuple[str, str], tuple[ModelBundle, Pipeline]] = {}
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        with bound(job_id=request.job_id, study_uid=request.study_uid, series_uid=request.series_uid):
            try:
                reply = _run(request, cache)
            except DicomNodeError as exc:
                log.error("job failed: %s", exc)
                reply = Reply(Outcome.FAILED, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - report every failure to the parent
                log.error("job crashed: %s\n%s", exc, traceback.format_exc())
                reply = Reply(Outcome.FAILED, f"internal error {type(exc).__name__}: {exc}")
        conn.send(reply)
