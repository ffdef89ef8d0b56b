"""The one exception root of dicomnode and its tree.

::

    DicomNodeError                 root: catch this to catch everything dicomnode raises
    ├── ConfigError                the YAML or an override is invalid (key, value, fix)
    ├── SpoolError                 durable state could not be written or read
    ├── JobStateError              an illegal job transition, or a record that is not a job
    ├── IngestError                an inbound instance was refused (carries a DIMSE status)
    ├── RoutingError               a rule is malformed or a series cannot be routed
    ├── ModelError                 a model bundle is missing, malformed or fails its hashes
    ├── InputRefused               an input is outside its model's requirements (job ``refused``)
    ├── PipelineError              a pipeline job failed (bad series, unsupported slide, ...)
    │   └── VolumeError            a series does not form one regular volume
    ├── OutputError                a SEG/SR could not be built or failed validation
    └── DispatchError              an output could not be delivered to a destination

Every exception carries context fields (``series_uid``, ``peer``, ``status`` ...) and a
message that says what failed, where, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ConfigError",
    "DicomNodeError",
    "DispatchError",
    "IngestError",
    "InputRefused",
    "JobStateError",
    "ModelError",
    "OutputError",
    "PipelineError",
    "RoutingError",
    "SpoolError",
    "VolumeError",
]


class DicomNodeError(Exception):
    """Root of every exception dicomnode raises on purpose."""


class ConfigError(DicomNodeError):
    """Invalid configuration.

    Parameters
    ----------
    key
        Dotted path of the offending key (``node.port``).
    value
        The value found.
    fix
        What to do about it.
    """

    def __init__(self, key: str, value: object, fix: str) -> None:
        self.key, self.value, self.fix = key, value, fix
        super().__init__(f"config key '{key}': bad value {value!r}: {fix}")


class SpoolError(DicomNodeError):
    """Durable spool state could not be written or read."""


class JobStateError(DicomNodeError):
    """An illegal job state transition, or a record that is not a job (``job_id`` if known)."""

    def __init__(self, message: str, *, job_id: str = "") -> None:
        self.job_id = job_id
        super().__init__(message)


class IngestError(DicomNodeError):
    """An inbound instance was refused; ``status`` is the DIMSE status to answer."""

    def __init__(self, message: str, status: int) -> None:
        self.status = status
        super().__init__(message)


class RoutingError(DicomNodeError):
    """A routing rule is malformed."""


class ModelError(DicomNodeError):
    """A model bundle is missing, malformed, or its files fail their sha256."""


class InputRefused(DicomNodeError):
    """The guard refused an input: it is outside the model bundle's requirements.

    Parameters
    ----------
    message
        Every failed requirement: name, value found, value expected.
    verdicts
        Every check as JSON (``requirement``, ``found``, ``expected``, ``passed``).
    measures
        What the guard measured on the input (JSON).
    series_uid
        The refused series.
    """

    def __init__(self, message: str, *, verdicts: Sequence[Mapping[str, Any]] = (),
                 measures: Mapping[str, Any] | None = None, series_uid: str | None = None) -> None:
        self.verdicts = tuple(dict(v) for v in verdicts)
        self.measures = dict(measures or {})
        self.series_uid = series_uid
        super().__init__(message)


class PipelineError(DicomNodeError):
    """A pipeline job failed; the message says what was wrong with which input."""

    def __init__(self, message: str, *, series_uid: str | None = None) -> None:
        self.series_uid = series_uid
        super().__init__(message)


class VolumeError(PipelineError):
    """A series cannot be made into one regular volume.

    ``instances`` names the offending SOP Instance UIDs (or file names).
    """

    def __init__(
        self, message: str, *, instances: Sequence[str] = (), series_uid: str | None = None
    ) -> None:
        self.instances = tuple(instances)
        shown = ", ".join(self.instances[:5]) + (" ..." if len(self.instances) > 5 else "")
        full = f"{message} (instances: {shown})" if self.instances else message
        super().__init__(full, series_uid=series_uid)


class OutputError(DicomNodeError):
    """A SEG or SR could not be built, or failed read-back validation."""


class DispatchError(DicomNodeError):
    """An output could not be delivered.

    Parameters
    ----------
    message
        What failed.
    destination
        Name of the destination in the config.
    status
        DIMSE or HTTP status when the peer answered, else ``None``.
    """

    def __init__(self, message: str, *, destination: str = "", status: int | None = None) -> None:
        self.destination, self.status = destination, status
        super().__init__(message)
