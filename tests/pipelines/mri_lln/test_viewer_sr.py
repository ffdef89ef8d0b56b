"""The MR viewer SR (series 903) reads cleanly in OHIF 3.13.2.

What OHIF shows of a measurement group (``getSopClassHandlerModule.ts``, see
``dicomnode/pipelines/mri_lln/sr_content.py``): for a group with a top-level SCOORD its NUMs
and ``363698007: <finding site>`` (the bare code); for a group whose NUMs are INFERRED FROM
their polylines, the "Comment" text first, then the NUMs. The browser check itself is
``tests/viewer/test_ohif.py`` (``make test-viewer``); these tests pin the structure it relies on.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pytest
from lln_labels import lln_bundle

from dicomnode.dicom.volume import load_volume
from dicomnode.errors import OutputError
from dicomnode.outputs.validate import dciodvfy_errors
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.mri_lln import build_outputs
from dicomnode.synth.mr import generate_case

DEMO = Path(__file__).resolve().parents[3] / "models" / "lln-t2-demo"
BUNDLE = lln_bundle("0.0-test", DEMO)
STATIONS = {"internal_iliac": "internal iliac", "obturator": "obturator", "external_iliac": "external iliac"}


def _outputs(seed: int, tmp: Path):  # noqa: ANN202
    case = generate_case(seed, n_nodes=3)
    paths = case.write(tmp / "mr")
    first = case.datasets[0]
    ctx = PipelineContext("mri-lln", first.StudyInstanceUID, first.SeriesInstanceUID, tmp, job_id="v")
    return build_outputs(load_volume(paths), case.labels, BUNDLE, ctx, case.datasets)


def _code(item) -> str:  # noqa: ANN001
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def _groups(sr) -> list:  # noqa: ANN001
    container = next(c for c in sr.ContentSequence if c.ValueType == "CONTAINER" and _code(c) == "126010")
    return list(container.ContentSequence)


def _polylines(sr) -> dict[str, list[float]]:  # noqa: ANN001
    """Tracking identifier of each planar group of the full SR → its polyline."""
    out = {}
    for g in _groups(sr):
        items = {_code(it): it for it in g.ContentSequence}
        scoord = [it for it in g.ContentSequence if it.ValueType == "SCOORD"]
        if scoord:
            out[str(items["112039"].TextValue)] = [float(v) for v in scoord[0].GraphicData]
    return out


@pytest.mark.parametrize("seed", [21, 24])  # 24: one node's axes lie on different slices
def test_viewer_groups_caption_axes_and_site(seed: int, tmp_path: Path) -> None:
    result = _outputs(seed, tmp_path)
    seg, sr, viewer = result.datasets
    nodes = {n["tracking_id"]: n for n in result.findings["nodes"]}
    full = _polylines(sr)
    seg_uids = {str(s.TrackingID): str(s.TrackingUID) for s in seg.SegmentSequence if "TrackingID" in s}
    seen: dict[str, list[str]] = {}
    for group in _groups(viewer):
        items = group.ContentSequence
        # no top-level SCOORD: OHIF would label the finding site with its bare code
        assert [it.ValueType for it in items if it.ValueType in ("SCOORD", "SCOORD3D")] == []
        ident = next(str(it.TextValue) for it in items if _code(it) == "112039")
        uid = next(str(it.UID) for it in items if _code(it) == "112040")
        node_id = ident.split(" ")[0]
        node = nodes[node_id]
        station = STATIONS.get(node["station"], "pelvic")
        comments = [str(it.TextValue) for it in items if it.ValueType == "TEXT" and _code(it) == "121106"]
        borderline = ", borderline" if node["borderline"] else ""  # test_fidelity.py
        assert comments == [f"{node_id} {node['side']} {station} lymph node, {node['status']}{borderline}"]
        site = next(it for it in items if _code(it) == "363698007")  # kept, coded, with laterality
        assert site.ConceptCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert site.ContentSequence[0].ConceptCodeSequence[0].CodeMeaning.lower() == node["side"]
        for num in (it for it in items if it.ValueType == "NUM"):
            which = {"103340004": "short", "103339001": "long"}[_code(num)]
            unit = num.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
            assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("mm", "UCUM")
            (line,) = [c for c in num.ContentSequence if c.ValueType == "SCOORD"]
            assert line.RelationshipType == "INFERRED FROM" and line.GraphicType == "POLYLINE"
            assert [float(v) for v in line.GraphicData] == full[f"{node_id} {which} axis"]
            assert "ReferencedSOPSequence" in line.ContentSequence[0]
            seen.setdefault(node_id, []).append(which)
        if ident == node_id:  # both axes on one slice: the node's own TrackingUID (as in the SEG)
            assert uid == seg_uids[node_id]
    assert {k: sorted(v) for k, v in seen.items()} == {k: ["long", "short"] for k in nodes}
    split = [n for n in nodes if len([g for g in _groups(viewer) if str(g.ContentSequence[0].TextValue)
                                      .startswith(f"{n} ")]) == 2]
    assert bool(split) == (seed == 24)
    path = tmp_path / "viewer.dcm"
    viewer.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    assert len(hd.sr.srread(path).content.get_observer_contexts()) >= 1


def test_viewer_check_refuses_a_group_without_caption(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from dicomnode.pipelines.mri_lln.sr import _check_readback

    result = _outputs(21, tmp_path)
    viewer = result.datasets[2]
    group = _groups(viewer)[0]
    group.ContentSequence = [it for it in group.ContentSequence if _code(it) != "121106"]
    with pytest.raises(OutputError, match="viewer SR read-back"):
        _check_readback(viewer, SimpleNamespace(nodes=[None] * result.findings["n_nodes"]), viewer=True)
