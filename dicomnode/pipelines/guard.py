"""The guard: is an input one the model was made for? Shared by every pipeline's guard.

Each pipeline has its own guard module (``pipelines/<name>/guard.py``) that measures an
input and checks it against the bundle's ``requirements`` (see
:mod:`dicomnode.inference.requirements`), giving a :class:`GuardReport`. A report with a
failed :class:`~dicomnode.inference.requirements.Verdict` refuses the input: the pipeline
raises :class:`~dicomnode.errors.InputRefused` before inference, and the job ends
``refused``. Measures beyond a warning margin on an accepted input are *flags*: shown in
``findings.json``, the SR and ``dicomnode jobs``, never a refusal.

:func:`check_files` runs a pipeline's guard on files without loading the model
(``dicomnode rules test``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomnode.errors import InputRefused
from dicomnode.inference.manifest import ModelBundle
from dicomnode.inference.requirements import Verdict

__all__ = ["GUARDS", "GuardReport", "check_files"]

#: Pipeline name → module with ``check_files(bundle, files) -> GuardReport``.
GUARDS = {"mri-lln": "dicomnode.pipelines.mri_lln.guard", "wsi-two-stage": "dicomnode.pipelines.wsi_two_stage.guard"}


@dataclass(frozen=True)
class GuardReport:
    """What the guard found for one input.

    Attributes
    ----------
    verdicts
        One per requirement checked.
    measures
        What was measured (JSON values), kept in ``findings.json`` as ``input``.
    flags
        Out-of-distribution warnings on an accepted input (human-readable).
    """

    verdicts: tuple[Verdict, ...] = ()
    measures: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    @property
    def failed(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.passed)

    @property
    def refused(self) -> bool:
        return bool(self.failed)

    def reason(self) -> str:
        """Every failed requirement, ``; ``-separated ("" when accepted)."""
        return "; ".join(str(v) for v in self.failed)

    def to_json(self) -> dict[str, Any]:
        """``findings.json``'s ``input`` section."""
        return {"accepted": not self.refused, "verdicts": [v.to_json() for v in self.verdicts],
                "measures": self.measures, "flags": list(self.flags)}

    def raise_if_refused(self, series_uid: str) -> None:
        """Raise :class:`~dicomnode.errors.InputRefused` naming every failed requirement.

        Raises
        ------
        InputRefused
            At least one requirement failed.
        """
        if self.refused:
            raise InputRefused(f"input refused: {self.reason()}", verdicts=[v.to_json() for v in self.verdicts],
                               measures=self.measures, series_uid=series_uid)


def check_files(pipeline: str, bundle: ModelBundle, files: Sequence[Path]) -> GuardReport | None:
    """Run pipeline ``pipeline``'s guard on ``files`` (``None``: that pipeline has no guard).

    Raises
    ------
    dicomnode.errors.PipelineError
        The files cannot be measured (not one volume, not a slide); the message says why.
    """
    if pipeline not in GUARDS:
        return None
    module = importlib.import_module(GUARDS[pipeline])
    report: GuardReport = module.check_files(bundle, files)
    return report
