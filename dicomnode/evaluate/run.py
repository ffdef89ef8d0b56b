"""Run one model bundle over the cases through the node's own pipeline code.

The pipeline comes from the registry (:func:`dicomnode.pipelines.create_pipeline`, named by
the bundle's task) and each case goes through ``Pipeline.run(files, ctx)`` exactly as a job
does in the worker; its :class:`~dicomnode.pipelines.base.PipelineResult` (findings, SEG,
SR, preview) is what gets evaluated and is kept under ``OUT/cases/<case>/``.

One adaptation: the patch-level WSI metrics need the classifier's probability per patch,
which ``PipelineResult`` does not carry (only the banded heatmap). When the pipeline has an
``analyse(slide)`` step (``wsi-two-stage``), :func:`_observe` wraps it on this pipeline
instance to keep the analysis it returns; nothing is computed a second time.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pydicom

from dicomnode.errors import DicomNodeError
from dicomnode.evaluate.cases import Case
from dicomnode.inference.manifest import ModelBundle, load_bundle
from dicomnode.pipelines import create_pipeline
from dicomnode.pipelines.base import Pipeline, PipelineContext, PipelineResult

__all__ = ["CaseRun", "Progress", "load_model", "run_cases"]


@dataclass
class CaseRun:
    """The pipeline's result for one case (or why there is none)."""

    case: Case
    result: PipelineResult | None = None
    seconds: float = 0.0
    error: str = ""
    analysis: Any = None
    folder: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)


class Progress:
    """A one-line progress bar on ``stream`` (stderr): ``[#####.....] 3/10 case 2.1 s``."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.total, self.label, self.width = max(total, 1), label, width
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0

    def step(self, name: str, seconds: float) -> None:
        """One more case finished."""
        self.done += 1
        filled = self.width * self.done // self.total
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{self.done}/{self.total} {name[:30]:<30} {seconds:6.1f} s")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def load_model(path: Path, overrides: Mapping[str, float] | None = None) -> ModelBundle:
    """Load (and hash-check) a bundle; ``overrides`` replace entries of its ``thresholds``."""
    bundle = load_bundle(path)
    if overrides:
        bundle = dataclasses.replace(bundle, thresholds={**bundle.thresholds, **overrides})
    return bundle


def _observe(pipeline: Pipeline) -> list[Any]:
    """Keep what ``pipeline.analyse`` returns (see the module docstring)."""
    seen: list[Any] = []
    original: Callable[..., Any] | None = getattr(pipeline, "analyse", None)
    if original is None:
        return seen

    def analyse(*args: Any, **kwargs: Any) -> Any:
        found = original(*args, **kwargs)
        seen.append(found)
        return found

    setattr(pipeline, "analyse", analyse)  # noqa: B010 - an instance attribute shadows the method
    return seen


def _save(result: PipelineResult, folder: Path) -> dict[str, Path]:
    """Write findings.json, the output datasets and side files as the node's folder target would."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = {"findings.json": folder / "findings.json"}
    saved["findings.json"].write_text(json.dumps(result.findings, indent=2, default=str))
    for ds in result.datasets:
        name = f"{str(ds.Modality).lower()}_{int(ds.get('SeriesNumber', 0))}.dcm"
        raw = result.encoded.get(str(ds.SOPInstanceUID))
        if raw is None:
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            raw = buffer.getvalue()
        (folder / name).write_bytes(raw)
        saved[name] = folder / name
    for name, data in result.files.items():
        (folder / name).write_bytes(data)
        saved[name] = folder / name
    return saved


def _series(case: Case) -> tuple[str, str]:
    ds = pydicom.dcmread(case.images[0], stop_before_pixels=True)
    return str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))


def _run_one(pipeline: Pipeline, seen: list[Any], case: Case, task: str, out: Path) -> CaseRun:
    run = CaseRun(case)
    if case.error:
        run.error = case.error
        return run
    seen.clear()
    start = time.perf_counter()
    try:
        study, series = _series(case)
        work = out / "work" / case.name
        work.mkdir(parents=True, exist_ok=True)
        ctx = PipelineContext(pipeline=task, study_uid=study, series_uid=series, workdir=work,
                              job_id=f"evaluate-{case.name}")
        run.result = pipeline.run(case.images, ctx)
    except (DicomNodeError, OSError, ValueError) as exc:  # the pipeline's own refusals, unreadable files
        run.error = f"pipeline: {type(exc).__name__}: {exc}"
    except Exception as exc:  # a site's plug-in may raise anything; the other cases go on
        run.error = f"pipeline crashed: {type(exc).__name__}: {exc}"
    run.seconds = time.perf_counter() - start
    shutil.rmtree(out / "work" / case.name, ignore_errors=True)  # the job's scratch folder, as the worker does
    run.analysis = seen[-1] if seen else None
    if run.result is not None:
        run.folder = out / "cases" / case.name
        run.files = _save(run.result, run.folder)
    return run


def run_cases(
    bundle: ModelBundle,
    cases: Sequence[Case],
    out: Path,
    *,
    settings: Mapping[str, Any] | None = None,
    label: str = "evaluate",
    progress: bool = True,
) -> list[CaseRun]:
    """Run ``bundle``'s pipeline on every case (errors are kept per case).

    Raises
    ------
    DicomNodeError
        The pipeline cannot be created for the bundle (the command cannot run).
    """
    pipeline = create_pipeline(bundle.task, bundle, dict(settings or {}))
    seen = _observe(pipeline)
    bar = Progress(len(cases), label) if progress else None
    runs = []
    for case in cases:
        runs.append(_run_one(pipeline, seen, case, bundle.task, out))
        if bar is not None:
            bar.step(case.name, runs[-1].seconds)
    return runs
