"""Turn one slide's analysis into findings and outputs (SEG, SR, preview).

Everything here is pure bookkeeping between the stage results and the output writers:
the tumour mask is thresholded, the heatmap bands are painted onto the output grid,
deposit outlines are moved from output-grid to level-0 pixel coordinates (SR) and to µm
(preview), and the JSON findings are assembled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.inference.manifest import ModelBundle
from dicomnode.outputs.common import read_back
from dicomnode.pipelines.base import PipelineResult
from dicomnode.pipelines.wsi_two_stage.config import Thresholds, WsiSettings
from dicomnode.pipelines.wsi_two_stage.deposits import Deposit, find_deposits, slide_class
from dicomnode.pipelines.wsi_two_stage.preview import HeatmapImage, finish_preview, heatmap_image
from dicomnode.pipelines.wsi_two_stage.seg import (
    SegGeometry,
    band_masks,
    build_wsi_seg,
    slide_reference,
    to_output_grid,
)
from dicomnode.pipelines.wsi_two_stage.sr import DepositReport, SlideReport, build_wsi_sr
from dicomnode.pipelines.wsi_two_stage.stages import ClassifierResult, SegmenterResult
from dicomnode.pipelines.wsi_two_stage.tissue import TissueMap

__all__ = ["SlideAnalysis", "build_result", "findings"]

logger = logging.getLogger(__name__)


@dataclass
class SlideAnalysis:
    """Everything measured on one slide.

    Attributes
    ----------
    base
        Level-0 header.
    base_mpp
        Level-0 µm/px.
    tissue, classifier, segmenter
        Stage results.
    timings
        Seconds per step.
    thumbnail, thumbnail_mpp
        RGB image of the whole slide for the preview and its µm/px (``None``: use the
        tissue detection image).
    deposits
        Filled by :func:`build_result` (largest first).
    """

    base: Dataset
    base_mpp: float
    tissue: TissueMap
    classifier: ClassifierResult
    segmenter: SegmenterResult
    timings: dict[str, float] = field(default_factory=dict)
    thumbnail: np.ndarray | None = None
    thumbnail_mpp: float = 0.0
    deposits: list[Deposit] = field(default_factory=list)


def findings(a: SlideAnalysis, t: Thresholds, dense: bool) -> dict[str, Any]:
    """JSON-serialisable findings of a slide."""
    largest = a.deposits[0].largest_dimension_mm if a.deposits else 0.0
    cls = a.classifier
    positive = cls.classified & (cls.prob >= t.tumour_probability)
    mm = a.segmenter.mpp / 1000.0
    return {
        "class": slide_class(largest, t.itc_max_mm, t.micro_max_mm),
        "metastasis": bool(a.deposits),
        "largest_deposit_mm": round(largest, 4),
        "tumour_area_mm2": round(sum(d.area_mm2 for d in a.deposits), 5),
        "tissue_area_mm2": round(a.tissue.area_mm2, 4),
        "max_probability": round(float(cls.prob.max(initial=0.0)), 4),
        "segmenter_max_probability": round(float(a.segmenter.prob.max(initial=0.0)), 4),
        "positive_patches": int(positive.sum()),
        "gated_patches": int((cls.classified & (cls.prob >= t.gate_probability)).sum()),
        "classifier_patches": int(cls.classified.sum()),
        "segmenter_calls": int(a.segmenter.tiles),
        "dense": dense,
        "deposits": [
            {
                "number": d.number,
                "largest_dimension_mm": round(d.largest_dimension_mm, 4),
                "area_mm2": round(d.area_mm2, 5),
                "class": slide_class(d.largest_dimension_mm, t.itc_max_mm, t.micro_max_mm),
                "centroid_mm": [round(d.centroid[0] * mm, 4), round(d.centroid[1] * mm, 4)],
                "max_probability": round(d.max_probability, 4),
            }
            for d in a.deposits
        ],
        "mpp": {
            "base": a.base_mpp,
            "classifier": cls.grid.raster.mpp,
            "segmenter_output": a.segmenter.mpp,
            "tissue": a.tissue.mpp,
        },
        "timings_s": {k: round(v, 3) for k, v in a.timings.items()},
    }


def _slide_report(a: SlideAnalysis, found: dict[str, Any], t: Thresholds) -> SlideReport:
    factor = a.segmenter.mpp / a.base_mpp
    deps = [
        DepositReport(
            d.number,
            d.largest_dimension_mm,
            d.area_mm2,
            slide_class(d.largest_dimension_mm, t.itc_max_mm, t.micro_max_mm),
            d.outline * factor,
        )
        for d in a.deposits
    ]
    return SlideReport(
        found["class"],
        found["largest_deposit_mm"],
        found["tumour_area_mm2"],
        found["tissue_area_mm2"],
        found["max_probability"],
        deps,
    )


def _heatmap(a: SlideAnalysis, cell_bands: np.ndarray) -> HeatmapImage:
    """The preview's thumbnail with the heatmap bands (needs no deposits)."""
    thumb, thumb_mpp = (a.thumbnail, a.thumbnail_mpp) if a.thumbnail is not None else (a.tissue.thumbnail, a.tissue.mpp)
    return heatmap_image(thumb, thumb_mpp, cell_bands, a.classifier.grid.cell_um)


def _preview(heatmap: Future[HeatmapImage], a: SlideAnalysis, t: Thresholds, headline: str) -> bytes:
    """The preview PNG: ``heatmap`` plus deposit outlines and legend."""
    outlines = [d.outline * a.segmenter.mpp for d in a.deposits]
    return finish_preview(heatmap.result(), outlines, band_limits=t.heatmap_bands, headline=headline)


def build_result(
    a: SlideAnalysis,
    bundle: ModelBundle,
    t: Thresholds,
    settings: WsiSettings,
    uid: Callable[[str], str],
) -> PipelineResult:
    """Find deposits and build SEG, SR, preview and findings.

    The preview (mostly PNG compression, which releases the GIL) is rendered in a thread:
    its heatmap part while the deposits are found, the rest while the SEG and SR are built
    and checked in this thread. Pillow's PNG encoder is safe beside the SEG's JPEG 2000
    encoder; two JPEG 2000 encoders at once are not (see :func:`build_wsi_seg`).
    """
    seg_r, cls = a.segmenter, a.classifier
    cell_bands = band_masks(cls.prob, cls.classified, t.heatmap_bands)
    with ThreadPoolExecutor(1, thread_name_prefix="wsi-preview") as pool:
        heatmap = pool.submit(_heatmap, a, cell_bands)
        a.deposits = find_deposits(seg_r.prob, seg_r.mpp, t.tumour_probability)
        found = findings(a, t, settings.dense)
        headline = (
            f"{bundle.id} {bundle.version}: class {found['class']}, largest deposit "
            f"{found['largest_deposit_mm']:.2f} mm, {len(a.deposits)} deposit(s)"
        )
        preview = pool.submit(_preview, heatmap, a, t, headline)  # same worker: after the heatmap
        tumour = seg_r.prob >= t.tumour_probability
        bands = to_output_grid(cell_bands, cls.grid.cell_um, seg_r.mpp, tumour.shape)
        seg = build_wsi_seg(
            SegGeometry(a.base, a.base_mpp, seg_r.mpp),
            tumour,
            bands,
            bundle,
            uid,
            band_limits=t.heatmap_bands,
        )
        ref = slide_reference(a.base, uid("specimen"))
        sr = build_wsi_sr(ref, seg, _slide_report(a, found, t), bundle, uid, max_deposits=settings.max_sr_deposits)
        encoded: dict[str, bytes] = {}
        read_back(seg, "SEG", encoded)
        read_back(sr, "SR", encoded)
        png = preview.result()
    return PipelineResult(datasets=[seg, sr], files={"preview.png": png}, findings=found, encoded=encoded)
