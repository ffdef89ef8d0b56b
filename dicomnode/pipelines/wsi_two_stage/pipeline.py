"""Pipeline ``wsi-two-stage``: VL WSI → classifier gate → segmenter → deposits → SEG/SR/PNG.

``create(bundle, settings)`` validates the manifest and settings and builds both ONNX
Runtime sessions once; :meth:`WsiTwoStagePipeline.run` is then called per slide series:

1. open the slide (wsidicom, VOLUME levels, brightfield RGB only);
2. tissue mask on a low-resolution read (saturation Otsu + morphology);
3. stage 1: classifier on every tissue patch of its grid → probability grid;
4. stage 2: segmenter on the tiles over gated patches (p ≥ gate) plus a one-patch halo,
   or on every tissue patch with ``dense: true`` → stitched probability mask;
5. deposits, slide class, SEG + SR + preview (:mod:`dicomnode.pipelines.wsi_two_stage.report`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.dicom.slide import Slide, open_slide
from dicomnode.errors import ConfigError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.pipelines.base import PipelineContext, PipelineResult
from dicomnode.pipelines.guard import GuardReport
from dicomnode.pipelines.wsi_two_stage.config import (
    ModelSpec,
    WsiSettings,
    model_spec,
    thresholds,
)
from dicomnode.pipelines.wsi_two_stage.guard import check_headers, check_tissue, read_headers
from dicomnode.pipelines.wsi_two_stage.report import SlideAnalysis, build_result
from dicomnode.pipelines.wsi_two_stage.stages import gate_cells, output_scale, run_classifier, run_segmenter
from dicomnode.pipelines.wsi_two_stage.stream import PatchModel
from dicomnode.pipelines.wsi_two_stage.tissue import TissueMap, detect_tissue

__all__ = ["WsiTwoStagePipeline", "create"]

logger = logging.getLogger(__name__)

NAME = "wsi-two-stage"
#: Longest side of the preview image in pixels.
PREVIEW_SIDE = 1024


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


def _load_model(bundle: ModelBundle, spec: ModelSpec, settings: WsiSettings) -> PatchModel:
    from dicomnode.inference.onnx import OnnxModel  # optional heavy dependency

    providers = list(settings.providers) if settings.providers is not None else None
    model: PatchModel = OnnxModel(
        bundle.path(spec.file),
        spec.raw,
        providers=providers,
        intra_op_threads=settings.intra_op_threads,
    )
    return model


class WsiTwoStagePipeline:
    """A warm two-stage WSI pipeline for one model bundle (see module docstring).

    Parameters
    ----------
    bundle
        A verified ``wsi-two-stage`` bundle.
    settings
        Validated run-time settings.
    classifier, segmenter
        Loaded models (``predict(uint8 NHWC) -> probabilities``).
    """

    name = NAME

    def __init__(
        self,
        bundle: ModelBundle,
        settings: WsiSettings,
        classifier: PatchModel,
        segmenter: PatchModel,
    ) -> None:
        self.bundle, self.settings = bundle, settings
        self.classifier_spec = model_spec(bundle, "classifier")
        self.segmenter_spec = model_spec(bundle, "segmenter")
        self.thresholds = thresholds(bundle)
        patch = self.segmenter_spec.patch_size
        self.margin = settings.segmenter_margin if settings.segmenter_margin is not None else patch // 8
        if 2 * self.margin >= patch:
            raise ConfigError(
                "settings.segmenter_margin",
                self.margin,
                f"must be less than half the segmenter patch ({patch} px)",
            )
        self.output_mpp = float(self.segmenter_spec.output_mpp or self.segmenter_spec.mpp)
        output_scale(patch, self.segmenter_spec.mpp, self.output_mpp, self.margin)
        self.classifier, self.segmenter = classifier, segmenter

    def _thumbnail(self, slide: Slide) -> tuple[np.ndarray, float] | None:
        """A preview image about ``PREVIEW_SIDE`` px on its longest side, if finer than the
        tissue image."""
        mpp = max(max(slide.size_um) / PREVIEW_SIDE, slide.mpp)
        if mpp >= self.settings.tissue_mpp:
            return None
        raster = slide.raster(mpp, max_upsample=float("inf"))
        return slide.read_raster(raster), raster.mpp

    def _tissue(self, slide: Slide) -> TissueMap:
        raster = slide.raster(max(self.settings.tissue_mpp, slide.mpp), max_upsample=float("inf"))
        return detect_tissue(slide.read_raster(raster), raster.mpp)

    def analyse(self, slide: Slide, guard: GuardReport | None = None) -> SlideAnalysis:
        """Run tissue detection and both stages on an open slide.

        With the ``guard`` report of the slide's headers, the tissue area is checked too
        too: too little tissue refuses the slide before the classifier.
        """
        s, cs, ss = self.settings, self.classifier_spec, self.segmenter_spec
        timings: dict[str, float] = {}
        # refuse a slide that is too coarse before spending time on it
        slide.raster(cs.mpp), slide.raster(ss.mpp)
        with _timed(timings, "tissue"):
            tissue = self._tissue(slide)
        if guard is not None:
            guard = check_tissue(guard, self.bundle, tissue.area_mm2)
            guard.raise_if_refused(str(slide.base.get("SeriesInstanceUID", "")))
        with _timed(timings, "classifier"):
            cls = run_classifier(
                slide,
                self.classifier,
                cs.mpp,
                cs.patch_size,
                tissue,
                min_tissue=s.min_tissue_fraction,
                batch_size=s.batch_size,
                workers=s.read_workers,
            )
        selected = gate_cells(cls, self.thresholds.gate_probability, dense=s.dense)
        with _timed(timings, "segmenter"):
            seg = run_segmenter(
                slide,
                self.segmenter,
                (ss.mpp, ss.patch_size, self.output_mpp),
                selected,
                cls.grid.cell_um,
                margin=self.margin,
                batch_size=s.segmenter_batch_size,
                workers=s.read_workers,
            )
        with _timed(timings, "thumbnail"):
            thumb = self._thumbnail(slide)
        analysis = SlideAnalysis(slide.base, slide.mpp, tissue, cls, seg, timings)
        if thumb is not None:
            analysis.thumbnail, analysis.thumbnail_mpp = thumb
        return analysis

    def run(self, files: Sequence[Path], ctx: PipelineContext) -> PipelineResult:
        """Process one slide series; see the module docstring.

        Raises
        ------
        dicomnode.errors.PipelineError
            The files are not a supported slide (not brightfield RGB, unreadable, too
            coarse for the models).
        dicomnode.errors.OutputError
            A SEG/SR could not be built.
        """
        start = time.perf_counter()
        guard = check_headers(self.bundle, read_headers(files))  # before the slide is even opened
        guard.raise_if_refused(ctx.series_uid)
        with open_slide(files) as slide:
            analysis = self.analyse(slide, guard)
        with _timed(analysis.timings, "outputs"):
            result = build_result(
                analysis,
                self.bundle,
                self.thresholds,
                self.settings,
                lambda kind: ctx.uid(self.bundle, kind),
            )
        analysis.timings["total"] = time.perf_counter() - start
        guard = check_tissue(guard, self.bundle, analysis.tissue.area_mm2)
        result = dataclasses.replace(result, findings={**result.findings, "input": guard.to_json()})
        timings = result.findings["timings_s"]
        timings["outputs"] = round(analysis.timings["outputs"], 3)
        timings["total"] = round(analysis.timings["total"], 3)
        logger.info(
            "job %s series %s: class %s, %d classifier / %d segmenter patches, %.1f s",
            ctx.job_id,
            ctx.series_uid,
            result.findings["class"],
            result.findings["classifier_patches"],
            result.findings["segmenter_calls"],
            analysis.timings["total"],
        )
        return result


def create(bundle: ModelBundle, settings: Mapping[str, Any]) -> WsiTwoStagePipeline:
    """Build the pipeline for ``bundle``: validate, then load both ONNX sessions once.

    Raises
    ------
    dicomnode.errors.ModelError
        The manifest lacks a key or a model file.
    dicomnode.errors.ConfigError
        A setting is unknown or invalid.
    """
    parsed = WsiSettings.from_mapping(settings)
    classifier = _load_model(bundle, model_spec(bundle, "classifier"), parsed)
    segmenter = _load_model(bundle, model_spec(bundle, "segmenter"), parsed)
    return WsiTwoStagePipeline(bundle, parsed, classifier, segmenter)
