"""The contract between the worker and a pipeline.

A pipeline is built once per worker for one model bundle (``create(bundle, settings)``),
kept warm, and called once per completed series with the spooled instance files. It
returns output datasets (SEG, SR, ...) and optional side files (a PNG preview); the
worker writes them into the spool and dispatch sends them. Pipelines never touch the
network or the spool themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydicom import Dataset

from dicomnode.dicom.uids import DEFAULT_UID_ROOT, derive_uid
from dicomnode.inference.manifest import ModelBundle

__all__ = ["Pipeline", "PipelineContext", "PipelineFactory", "PipelineResult"]


@dataclass(frozen=True)
class PipelineContext:
    """Per-job context handed to :meth:`Pipeline.run`.

    Attributes
    ----------
    pipeline
        Pipeline name (``mri-lln``).
    study_uid, series_uid
        Source StudyInstanceUID / SeriesInstanceUID.
    workdir
        Scratch folder owned by this job (deleted by the worker afterwards).
    uid_root
        Root for derived UIDs.
    job_id
        Job identifier, for logs.
    """

    pipeline: str
    study_uid: str
    series_uid: str
    workdir: Path
    uid_root: str = DEFAULT_UID_ROOT
    job_id: str = ""

    def uid(self, bundle: ModelBundle, kind: str) -> str:
        """Deterministic UID for output ``kind`` (``"seg.series"``, ``"sr.instance"`` ...).

        Depends only on the source series UID, pipeline, model id/version and ``kind``.
        """
        return derive_uid(
            self.series_uid, self.pipeline, bundle.id, bundle.version, kind, root=self.uid_root
        )


@dataclass(frozen=True)
class PipelineResult:
    """What a pipeline produced for one series.

    Attributes
    ----------
    datasets
        Output DICOM datasets, validated, ready to send.
    files
        Side files by name (``"preview.png"`` → bytes), written next to the outputs.
    findings
        JSON-serialisable summary (shown by ``jobs`` / ``replay --wait-results``).
    encoded
        Part-10 bytes of (some of) ``datasets`` by SOP Instance UID, produced by their
        read-back checks after the datasets were final; written as they are instead of
        encoding the datasets again.
    """

    datasets: Sequence[Dataset]
    files: Mapping[str, bytes] = field(default_factory=dict)
    findings: Mapping[str, Any] = field(default_factory=dict)
    encoded: Mapping[str, bytes] = field(default_factory=dict)


class Pipeline(Protocol):
    """A warm pipeline for one model bundle."""

    name: str

    def run(self, files: Sequence[Path], ctx: PipelineContext) -> PipelineResult:
        """Process the instance files of one complete series.

        Raises
        ------
        dicomnode.errors.PipelineError
            With a message that names the problem and the offending instances.
        """
        ...


class PipelineFactory(Protocol):
    """``create(bundle, settings)`` in each pipeline module."""

    def __call__(self, bundle: ModelBundle, settings: Mapping[str, Any]) -> Pipeline: ...
