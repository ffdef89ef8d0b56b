"""Pipeline ``wsi-two-stage``: lymph-node metastases on VL Whole Slide Microscopy images.

One folder per pipeline (the registry in :mod:`dicomnode.pipelines` names this package):

* :mod:`.pipeline` — :class:`WsiTwoStagePipeline` and ``create(bundle, settings)``;
* :mod:`.config` — run-time settings, model specs and thresholds from the bundle;
* :mod:`.tissue`, :mod:`.stream`, :mod:`.stages` — tissue mask, batched patch streaming,
  classifier gate and segmenter;
* :mod:`.deposits`, :mod:`.report` — deposits, slide class, findings and outputs;
* :mod:`.seg`, :mod:`.sr`, :mod:`.preview` — its own tiled SEG, TID 1500 SR and PNG preview.

Slide reading is not here but beside volume reading (:mod:`dicomnode.dicom.slide`); the
output rules shared with other pipelines are :mod:`dicomnode.outputs.common`.
"""

from dicomnode.pipelines.wsi_two_stage.pipeline import WsiTwoStagePipeline, create

__all__ = ["WsiTwoStagePipeline", "create"]
