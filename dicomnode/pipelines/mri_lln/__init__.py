"""Pipeline ``mri-lln``: lateral lymph nodes on T2-weighted pelvic MR.

One folder per pipeline (the registry in :mod:`dicomnode.pipelines` names this package):

* :mod:`.pipeline` — :class:`MriLlnPipeline`, ``create(bundle, settings)`` and the pure
  :func:`build_outputs` (label map → findings → SEG + SR);
* :mod:`.labels` — what the model's label values mean (from the bundle manifest);
* :mod:`.findings` — nodes as connected components, their model class and final status,
  with :mod:`.stations` (station and side) and :mod:`.axes` (short and long axis);
* :mod:`.seg`, :mod:`.sr`, :mod:`.sr_content` — its own BINARY SEG and TID 1500 SR (plus
  the planar-only viewer SR), with the codes and tracking UIDs both share in :mod:`.codes`.

Volume reading is not here but in :mod:`dicomnode.dicom.volume`; the output rules shared
with other pipelines are :mod:`dicomnode.outputs.common`.
"""

from dicomnode.pipelines.mri_lln.pipeline import NAME, MriLlnPipeline, build_outputs, check_bundle, create

__all__ = ["NAME", "MriLlnPipeline", "build_outputs", "check_bundle", "create"]
