"""Deterministic synthetic H&E lymph-node whole-slide images as VL WSI DICOM.

A slide is described by a handful of numbers drawn from a seed: tissue blobs (an outline
with a wobbly border), and circular tumour deposits of known diameter. Every pixel is a
pure function of its level-0 position and the seed (stateless integer hashing), so the
level-0 image is rendered tile by tile on demand and never held in memory: a slide ten
times larger costs time, not RAM. wsidicom writes the tiles as JPEG baseline TILED_FULL
instances and builds the pyramid (``save(add_missing_levels=True)``).

Appearance (brightfield H&E, a lymph node cut):

* white glass background;
* pink stroma packed with small dark-purple lymphocyte nuclei (≈ 6 µm), with paler
  sinus-like areas where lymphocytes are sparse;
* tumour deposits: pale lilac cytoplasm with large (≈ 12 µm) vesicular nuclei that have a
  dark rim and a nucleolus.

Modules: :mod:`.slide` (slide description, ground truth, :func:`generate_slide`,
:func:`render_region`), :mod:`.texture` (the H&E look), :mod:`.pyramid` (the VL WSI
writer, :func:`write_pyramid`).

Everything here is synthetic and NOT FOR CLINICAL USE.
"""

from dicomnode.synth.wsi.pyramid import write_pyramid
from dicomnode.synth.wsi.slide import SyntheticDeposit, SyntheticSlide, generate_slide, render_region

__all__ = ["SyntheticDeposit", "SyntheticSlide", "generate_slide", "render_region", "write_pyramid"]
