"""A test-only pipeline plug-in for the node-core tests (route pipeline ``plumbing:create``).

It does real work on the real instances — reads every spooled file, computes the series'
mean pixel value — and returns a real TID 1500 SR built with highdicom, so dispatch has a
genuine DICOM object to deliver. Bundle ``extra`` keys steer it for fault tests:
``sleep_s`` (a long job), ``fail`` (raise a PipelineError with that text), ``crash_on`` (a
SeriesDescription whose series makes the worker process segfault, for real, every time:
a poison input) and ``hold_file`` (write the worker's PID to ``<workdir>/worker.pid``, then
wait until that file exists: a job the test can kill mid-run).
It is never a default: only test configs name it.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from dicomnode.errors import PipelineError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.pipelines.base import PipelineContext, PipelineResult


class PlumbingPipeline:
    name = "plumbing"

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle

    def run(self, files: Sequence[Path], ctx: PipelineContext) -> PipelineResult:
        self._hold(ctx)
        description = pydicom.dcmread(files[0], stop_before_pixels=True).get("SeriesDescription", "")
        if self.bundle.extra.get("crash_on") and description == self.bundle.extra["crash_on"]:
            ctypes.string_at(0)  # a real SIGSEGV in native code, as a buggy codec would give
        sleep_s = float(self.bundle.extra.get("sleep_s", 0))
        if sleep_s:
            time.sleep(sleep_s)
        if self.bundle.extra.get("fail"):
            raise PipelineError(str(self.bundle.extra["fail"]), series_uid=ctx.series_uid)
        datasets = [pydicom.dcmread(f) for f in files]
        mean = float(np.mean([ds.pixel_array.mean() for ds in datasets]))
        sr = _report(datasets, mean, self.bundle, ctx)
        return PipelineResult(datasets=[sr], findings={"instances": len(datasets), "mean": round(mean, 3),
                                                       "summary": f"{len(datasets)} instances, mean {mean:.1f}"})


    def _hold(self, ctx: PipelineContext) -> None:
        hold = self.bundle.extra.get("hold_file")
        if not hold:
            return
        (ctx.workdir / "worker.pid").write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not Path(hold).exists():
            if time.monotonic() > deadline:
                raise PipelineError(f"test hold file {hold} never appeared", series_uid=ctx.series_uid)
            time.sleep(0.05)


def _report(datasets: list[pydicom.Dataset], mean: float, bundle: ModelBundle, ctx: PipelineContext) -> Any:
    observer = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=ctx.uid(bundle, "observer"), name="plumbing")))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=ctx.uid(bundle, "tracking"), identifier="series"),
        measurements=[hd.sr.Measurement(name=codes.SCT.Mean if hasattr(codes.SCT, "Mean") else codes.DCM.Mean,
                                        value=mean, unit=codes.UCUM.NoUnits)])
    report = hd.sr.MeasurementReport(observation_context=observer, procedure_reported=codes.SCT.ImagingProcedure,
                                     imaging_measurements=[group])
    return hd.sr.Comprehensive3DSR(
        evidence=datasets, content=report, series_instance_uid=ctx.uid(bundle, "sr.series"), series_number=990,
        sop_instance_uid=ctx.uid(bundle, "sr.instance"), instance_number=1, manufacturer="dicomnode-tests",
        is_complete=True, is_final=False, is_verified=False, series_description="plumbing test - NOT FOR CLINICAL USE")


def create(bundle: ModelBundle, settings: Mapping[str, Any]) -> PlumbingPipeline:
    return PlumbingPipeline(bundle)
