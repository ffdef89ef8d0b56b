"""The ``mri-lln`` pipeline: T2W pelvis series → nnU-Net v2 → lateral lymph nodes → SEG + SR.

``create(bundle, settings)`` loads the model once (kept warm by the worker);
:meth:`MriLlnPipeline.run` processes one series:

1. :func:`~dicomnode.dicom.volume.load_volume` (sorting, geometry, checks);
2. ``NnUNetRunner.predict_volume(volume)`` → label map on the grid (the array is handed to
   nnU-Net in the orientation the bundle declares, and the result put back);
3. :func:`build_outputs`: :func:`~dicomnode.pipelines.mri_lln.findings.compute_findings`,
   then the BINARY SEG (only when nodes were found) and the TID 1500 SR.

``build_outputs`` is pure (no model), so it can be tested and replayed on any label map.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom import Dataset

from dicomnode.dicom.volume import Volume, load_volume, read_instances
from dicomnode.errors import ModelError, PipelineError, VolumeError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.pipelines.base import PipelineContext, PipelineResult
from dicomnode.pipelines.mri_lln.findings import compute_findings
from dicomnode.pipelines.mri_lln.guard import check_volume
from dicomnode.pipelines.mri_lln.labels import LabelScheme
from dicomnode.pipelines.mri_lln.seg import build_seg
from dicomnode.pipelines.mri_lln.sr import build_sr, build_viewer_sr
from dicomnode.pipelines.mri_lln.sr_notes import input_notes

if TYPE_CHECKING:
    from dicomnode.inference.nnunet import NnUNetRunner

__all__ = ["NAME", "MriLlnPipeline", "build_outputs", "create"]

logger = logging.getLogger(__name__)

NAME = "mri-lln"
_SETTINGS = {"device", "threads", "spacing_tolerance"}


def build_outputs(
    volume: Volume,
    label_map: np.ndarray,
    bundle: ModelBundle,
    ctx: PipelineContext,
    source_datasets: Sequence[Dataset],
    guard: Mapping[str, Any] | None = None,
) -> PipelineResult:
    """Findings, SEG and SR for a label map on the volume grid.

    Parameters
    ----------
    volume
        The source volume (from :func:`~dicomnode.dicom.volume.load_volume`).
    label_map
        Integer label map, ``(z, y, x)`` like ``volume.array``, values as in the bundle's
        ``labels``.
    bundle
        The model bundle (labels, thresholds, identity, clinical-use flag).
    ctx
        Job context (deterministic output UIDs).
    source_datasets
        The series' instances (headers suffice).
    guard
        The guard's report on the input (``GuardReport.to_json()``): kept in the findings
        as ``input`` and, measures and flags, in the SR.

    Returns
    -------
    PipelineResult
        ``datasets`` = [SEG, SR, viewer SR] or [SR] when no node was found; ``findings`` = the
        JSON summary.

    Raises
    ------
    PipelineError
        The label map does not fit the volume or the bundle's labels are malformed.
    OutputError
        A SEG/SR could not be built or failed its read-back check.
    """
    scheme = LabelScheme.from_manifest(bundle.labels, bundle.thresholds)
    known = {0, *scheme.regions, *scheme.positive, *scheme.negative}
    unknown = sorted(set(np.unique(label_map).tolist()) - known)
    if unknown:
        raise PipelineError(
            f"label map has values {unknown} that model '{bundle.id}' does not define",
            series_uid=ctx.series_uid,
        )
    findings = compute_findings(label_map, volume, scheme)
    encoded: dict[str, bytes] = {}
    seg = build_seg(volume, label_map, findings, bundle, ctx, source_datasets, encoded)
    notes = input_notes(guard, f"{bundle.id} {bundle.version}") if guard else []
    sr = build_sr(volume, findings, bundle, ctx, source_datasets, seg, encoded=encoded, notes=notes)
    outputs: list[Dataset] = [*([seg] if seg is not None else []), sr]
    if findings.nodes:  # OHIF 3.13 can only open an SR whose every group has image coordinates
        outputs.append(build_viewer_sr(sr, findings, bundle, ctx, encoded=encoded))
    summary = {"model": {"id": bundle.id, "version": bundle.version}, **findings.to_json(),
               **({"input": dict(guard)} if guard else {})}
    return PipelineResult(datasets=outputs, findings=summary, encoded=encoded)


def check_bundle(bundle: ModelBundle) -> None:
    """What ``check-config`` can verify of a bundle without loading its model: the label
    scheme, the thresholds (7 mm rule, minimum node size) and ``input.orientation``.

    Raises
    ------
    PipelineError, ModelError
        Naming the bad key and what it must be.
    """
    from dicomnode.inference.nnunet import model_orientation  # noqa: PLC0415 - adapter module, imported lazily

    LabelScheme.from_manifest(bundle.labels, bundle.thresholds)
    model_orientation(bundle)


class MriLlnPipeline:
    """A warm ``mri-lln`` pipeline for one nnU-Net bundle.

    Parameters
    ----------
    bundle
        Verified ``mri-lln`` bundle.
    runner
        The loaded nnU-Net runner for ``bundle``.
    spacing_tolerance
        Passed to :func:`~dicomnode.dicom.volume.load_volume`.
    """

    name = NAME

    def __init__(self, bundle: ModelBundle, runner: NnUNetRunner, *, spacing_tolerance: float = 0.01) -> None:
        LabelScheme.from_manifest(bundle.labels, bundle.thresholds)  # fail at start, not per job
        self.bundle = bundle
        self.runner = runner
        self.spacing_tolerance = spacing_tolerance

    def run(self, files: Sequence[Path], ctx: PipelineContext) -> PipelineResult:
        """Process the instance files of one complete series.

        Raises
        ------
        VolumeError
            The series is not one regular volume (localizer, gap, orientations ...).
        PipelineError, ModelError, OutputError
            Inference or output building failed; the message says why.
        """
        try:  # each file is read once: pixels for the volume, headers as SEG/SR evidence
            datasets = read_instances(files)
            volume = load_volume(datasets, spacing_tolerance=self.spacing_tolerance)
        except VolumeError as exc:
            exc.series_uid = exc.series_uid or ctx.series_uid
            raise
        logger.info(
            "job %s series %s: volume %s spacing %s mm",
            ctx.job_id,
            ctx.series_uid,
            volume.shape,
            tuple(round(s, 3) for s in volume.spacing_zyx),
        )
        guard = check_volume(volume, datasets[0], self.bundle)  # before inference: refused inputs get none
        guard.raise_if_refused(ctx.series_uid)
        label_map = self.runner.predict_volume(volume)
        for ds in datasets:  # the volume holds its own copy; evidence needs headers only
            del ds.PixelData
        result = build_outputs(volume, label_map, self.bundle, ctx, datasets, guard.to_json())
        logger.info(
            "job %s series %s: %d node(s), LLN %s",
            ctx.job_id,
            ctx.series_uid,
            result.findings.get("n_nodes", 0),
            result.findings.get("lln_status"),
        )
        return result


def create(bundle: ModelBundle, settings: Mapping[str, Any]) -> MriLlnPipeline:
    """Build the pipeline and load its model once.

    Parameters
    ----------
    bundle
        Verified bundle with ``task: mri-lln`` and ``backend: nnunetv2``.
    settings
        Optional ``device`` (``auto``/``cpu``/``cuda[:N]``), ``threads`` (torch CPU
        threads) and ``spacing_tolerance`` (fraction of the slice step).

    Raises
    ------
    ModelError
        Wrong task/backend, unknown settings, or the model cannot be loaded.
    """
    if bundle.task != NAME or bundle.backend != "nnunetv2":
        raise ModelError(
            f"model '{bundle.id}' is task {bundle.task!r} / backend {bundle.backend!r}; "
            f"pipeline {NAME} needs task 'mri-lln' with backend 'nnunetv2'"
        )
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise ModelError(f"pipeline {NAME}: unknown setting(s) {unknown}; known: {sorted(_SETTINGS)}")
    try:
        LabelScheme.from_manifest(bundle.labels, bundle.thresholds)
    except PipelineError as exc:
        raise ModelError(f"model '{bundle.id}': {exc}") from exc
    from dicomnode.inference.nnunet import NnUNetRunner

    threads = settings.get("threads")
    runner = NnUNetRunner(
        bundle,
        device=str(settings.get("device", "auto")),
        threads=None if threads is None else int(threads),
    )
    return MriLlnPipeline(bundle, runner, spacing_tolerance=float(settings.get("spacing_tolerance", 0.01)))
