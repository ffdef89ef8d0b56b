"""The slide SEG is encoded the way slide viewers decode it (issue 14).

dicom-microscopy-viewer 0.48 (Slim, OHIF's microscopy mode) takes each decoded frame of a
BINARY SEG as bit-packed, ``Rows x Columns / 8`` bytes, and refuses anything else ("Frame
value does not have expected length: 65536 instead of 8192" for the JPEG 2000 frames the
node wrote before). The browser check is tests/viewer/test_microscopy.py (``make
test-viewer``); this test pins the encoding it relies on, without a browser.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from test_wsi_seg import BANDS, CMU_DICOMIZER, bundle, level0, make_inputs, spacing_um, uid

from dicomnode.outputs.validate import dciodvfy_errors
from dicomnode.pipelines.wsi_two_stage.seg import SegGeometry, build_wsi_seg


def test_seg_frames_are_bit_packed_as_slide_viewers_decode(wsi_dir: Path, tmp_path: Path) -> None:
    base = level0(wsi_dir / CMU_DICOMIZER)
    tumour, bands = make_inputs(base, 4.0, cell_px=8)
    seg = build_wsi_seg(SegGeometry(base, spacing_um(base), 4.0), tumour, bands, bundle(), uid, band_limits=BANDS)
    out = tmp_path / "seg.dcm"
    seg.save_as(out)
    back = pydicom.dcmread(out)
    assert not back.file_meta.TransferSyntaxUID.is_compressed
    assert (back.BitsAllocated, back.SegmentationType) == (1, "BINARY")
    frame_bytes = int(back.Rows) * int(back.Columns) // 8  # what the viewer expects per frame
    assert len(back.PixelData) in (int(back.NumberOfFrames) * frame_bytes, int(back.NumberOfFrames) * frame_bytes + 1)
    # frame k, unpacked, is the tile the SEG says: the first frame's bits are its pixels
    bits = np.unpackbits(np.frombuffer(back.PixelData[:frame_bytes], np.uint8), bitorder="little")
    assert np.array_equal(bits.reshape(int(back.Rows), int(back.Columns)), back.pixel_array[0].astype(np.uint8))
    assert dciodvfy_errors(out) == []


def _top_items(sr: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    return {str(it.ConceptNameCodeSequence[0].CodeValue): it for it in sr.ContentSequence}


def test_sr_names_the_specimen_subject_slim_requires(wsi_dir: Path, tmp_path: Path) -> None:
    """Slim shows an SR's regions only when its Subject Class is "Specimen" with the
    specimen's UID, identifier and container (TID 1009); they are the slide's."""
    from test_wsi_sr import build, report

    out, base = build(tmp_path, wsi_dir / CMU_DICOMIZER, report(2))
    back = pydicom.dcmread(out)
    items = _top_items(back)
    assert items["121024"].ConceptCodeSequence[0].CodeValue == "121027"  # Subject Class: Specimen
    specimen = base.SpecimenDescriptionSequence[0]
    assert items["121039"].UID == specimen.SpecimenUID
    assert items["121041"].TextValue == specimen.SpecimenIdentifier
    assert items["111700"].TextValue == base.ContainerIdentifier
    assert dciodvfy_errors(out) == []
