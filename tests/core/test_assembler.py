"""Series completeness: data-based for MR / enhanced MR / WSI, else quiet period, max wait."""

from __future__ import annotations

import pydicom
from conftest import mr_series

from dicomnode.assembler import Assembler, data_complete
from dicomnode.dicom.headers import instance_info, read_info


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_quiet_period_and_max_wait(tmp_path):
    infos = [read_info(p)[0] for p in mr_series(tmp_path, 3, seed="quiet")]
    clock = Clock()
    asm = Assembler(quiet_s=10, max_wait_s=25, clock=clock)
    asm.add(infos[0])
    clock.now += 9
    assert asm.due() == []
    asm.add(infos[1])
    clock.now += 9.9
    assert asm.due() == []
    clock.now += 0.2
    (uid, reason), = asm.due()
    assert uid == infos[0].series_uid and reason.startswith("quiet")
    # a series that never goes quiet completes at max wait
    for step in range(30):
        asm.add(infos[step % 3])
        clock.now += 1
        if done := asm.due():
            assert done[0][1].startswith("max wait") and step >= 24
            break
    else:
        raise AssertionError("max wait never reached")


def test_mr_images_in_acquisition(tmp_path):
    paths = mr_series(tmp_path, 5, seed="iia", images_in_acquisition=True)
    infos = [read_info(p)[0] for p in paths]
    assert not data_complete(infos[:4])
    assert data_complete(infos)
    clock = Clock()
    asm = Assembler(quiet_s=60, max_wait_s=600, clock=clock)
    for info in infos:
        asm.add(info)
    clock.now += 1.1
    assert asm.due()[0][1].startswith("data complete")


def test_enhanced_mr_single_instance(testdata):
    path = testdata / "mr" / "enhanced" / "siemens_enhanced_oblique_8frames.dcm"
    assert data_complete([read_info(path)[0]])


def test_wsi_tile_coverage_on_real_pyramid(testdata):
    folder = testdata / "wsi" / "cmu1-small-region-pyramid-wsi2dcm"
    infos = [instance_info(pydicom.dcmread(p, stop_before_pixels=True)) for p in sorted(folder.glob("*.dcm"))]
    assert data_complete(infos)
    base = max(infos, key=lambda i: i.tpm[0] * i.tpm[1])
    assert not data_complete([i for i in infos if i is not base])  # base level (level 0) missing
    partial = [i for i in infos if i is not base] + [type(base)(**{**base.to_json(), "frames": base.frames - 1})]
    assert not data_complete(partial)  # base level one tile short
