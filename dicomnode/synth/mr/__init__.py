"""Synthetic T2-weighted pelvic MR phantoms with lateral lymph nodes, as real DICOM.

Everything here is synthetic and NOT FOR CLINICAL USE. A case is fully determined by its
seed and parameters: same arguments → identical pixels, labels and UIDs.

Anatomy (all in patient LPS millimetres; patient left = +x, posterior = +y, superior = +z,
the pelvic midline is x = 0):

* body ellipse with subcutaneous fat, pelvic fat, side-wall muscles, rectum (posterior)
  and bladder (anterior);
* three nodal regions per side — internal iliac (posterior), obturator (lateral),
  external iliac (anterior) — as fatty ellipsoidal blobs with a vessel flow void;
* ellipsoidal lymph nodes inside the regions; nodes with "malignant features" are darker,
  heterogeneous and have an irregular border.

Label values (the demo model's label map): 0 background, 1 internal iliac region,
2 obturator region, 3 external iliac region, 4 node-positive, 5 node-negative; nodes
overwrite regions.

Modules: :mod:`.phantom` (label values, anatomy and nodes painted on the voxel grid),
:mod:`.series` (the MR Image Storage instances), :mod:`.case` (:class:`SyntheticCase`,
:func:`generate_case`), :mod:`.variants` (the same series stored with rows/columns
reversed or swapped).
"""

from __future__ import annotations

from dicomnode.synth.mr.case import SyntheticCase, generate_case
from dicomnode.synth.mr.phantom import LABELS, STATIONS, SyntheticNode

__all__ = ["LABELS", "STATIONS", "SyntheticCase", "SyntheticNode", "generate_case"]
