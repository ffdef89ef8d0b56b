"""Codes and tracking UIDs that the ``mri-lln`` SEG and SR share.

A node's station and side are coded the same way in both objects (SNOMED CT, PS3.16
CID 7600 for the stations), and a node's SEG segment and its SR measurement groups carry
the same TrackingUID, so a viewer can link them.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicomnode.inference.manifest import ModelBundle
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.mri_lln.findings import NodeFinding

__all__ = [
    "LATERALITY_CODES",
    "STATION_CODES",
    "STATION_NAMES",
    "UNKNOWN_STATION",
    "node_caption",
    "node_tracking_uid",
    "station_code",
]

#: Station name → SNOMED CT code (PS3.16 CID 7600). Hypogastric = internal iliac.
STATION_CODES: dict[str, Code] = {
    "internal_iliac": codes.SCT.HypogastricLymphNode,  # 69255009
    "obturator": codes.SCT.ObturatorLymphNode,  # 36086000
    "external_iliac": codes.SCT.ExternalIliacLymphNode,  # 65349008
}
STATION_NAMES = {
    "internal_iliac": "internal iliac",
    "obturator": "obturator",
    "external_iliac": "external iliac",
}
#: A node with no region nearby: generic pelvic lymph node (54268001).
UNKNOWN_STATION: Code = codes.SCT.PelvicLymphNode
LATERALITY_CODES: dict[str, Code] = {"left": codes.SCT.Left, "right": codes.SCT.Right}


def station_code(station: str | None) -> Code:
    """SNOMED code of a station name (generic pelvic lymph node when unknown)."""
    return STATION_CODES.get(station or "", UNKNOWN_STATION)


def node_tracking_uid(ctx: PipelineContext, bundle: ModelBundle, node: NodeFinding) -> str:
    """Deterministic TrackingUID of a node, shared by the SEG segment and the SR groups."""
    return ctx.uid(bundle, f"node.{node.number}.tracking")



def node_caption(node: NodeFinding) -> str:
    """How a node reads in a viewer: ``LN-3 left external iliac lymph node, positive``, with
    ``, borderline`` when its short axis is within one pixel of the threshold."""
    where = f"{node.side} {STATION_NAMES.get(node.station or '', 'pelvic')} lymph node"
    borderline = ", borderline" if node.borderline else ""
    return f"{node.tracking_id} {where}, {'positive' if node.positive else 'negative'}{borderline}"
