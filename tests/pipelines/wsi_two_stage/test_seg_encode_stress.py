"""The WSI output path survives concurrent native encoders (issue 8: worker segfault).

A fresh subprocess (a segfault must fail this test, not kill pytest) builds many tiled
SEGs of varied grids and mask layouts with :func:`build_wsi_seg` — the code the worker
runs — with Python logging on at DEBUG (every message of the JPEG 2000 encoder's log
bridge is emitted, the worst case) while another thread keeps encoding preview PNGs, as
``wsi_two_stage.report.build_result`` does. The SEG pixel data must also be byte-identical to a
quiet run (no logging, no PNG thread): concurrency may not change a result.

Two JPEG 2000 encoders at once crash this within a fraction of a second
(``bench/encode_stress.py``); the test guards that the output path never does that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dicomnode.synth.wsi import generate_slide

REPO = Path(__file__).resolve().parents[3]

CHILD = r'''
import hashlib, io, json, logging, sys, threading
import numpy as np
import pydicom
from pathlib import Path
from PIL import Image
from dicomnode.dicom.uids import derive_uid
from dicomnode.inference.manifest import ModelBundle
from dicomnode.pipelines.wsi_two_stage.preview import finish_preview, heatmap_image
from dicomnode.pipelines.wsi_two_stage.seg import SegGeometry, band_masks, build_wsi_seg, to_output_grid

stress, base_path = sys.argv[1] == "stress", sys.argv[2]
if stress:
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
base = pydicom.dcmread(base_path, stop_before_pixels=True)
bundle = ModelBundle(root=Path("."), id="stress", version="1", task="wsi-two-stage", backend="onnx", files={},
                     intended_use="tests")
stop = threading.Event()

def previews():
    rng = np.random.default_rng(0)
    thumb = (rng.random((700, 900, 3)) * 255).astype(np.uint8)
    bands = rng.random((3, 70, 90)) > 0.6
    while not stop.is_set():
        heat = heatmap_image(thumb, 8.0, bands, 80.0)
        finish_preview(heat, [np.array([[10.0, 10.0], [400.0, 300.0], [800.0, 50.0]])], band_limits=(0.5, 0.7, 0.9),
                       headline="stress")

def masks(i):
    rng = np.random.default_rng(i)
    shape = (int(rng.integers(40, 700)), int(rng.integers(40, 700)))
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    tumour = np.zeros(shape, bool)
    for _ in range(int(rng.integers(0, 6))):  # 0 deposits: an empty SEG (every frame encoded)
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(1, 120)
        tumour |= (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    cell = int(rng.integers(4, 40))
    grid = (-(-shape[0] // cell), -(-shape[1] // cell))
    prob = rng.random(grid)
    bands = to_output_grid(band_masks(prob, rng.random(grid) > 0.3, (0.5, 0.7, 0.9)), cell * 4.0, 4.0, shape)
    return tumour, bands

thread = threading.Thread(target=previews) if stress else None
if thread:
    thread.start()
digests = []
try:
    for i in range(int(sys.argv[3])):
        tumour, bands = masks(i)
        seg = build_wsi_seg(SegGeometry(base, 1.0, 4.0), tumour, bands, bundle,
                            lambda kind, i=i: derive_uid("stress", str(i), kind), band_limits=(0.5, 0.7, 0.9))
        digests.append([int(seg.NumberOfFrames), hashlib.sha256(bytes(seg.PixelData)).hexdigest()])
finally:
    stop.set()
    if thread:
        thread.join()
print(json.dumps(digests))
'''


@pytest.fixture(scope="module")
def slide_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Level-0 instance of a small synthetic slide (1 µm/px): the SEG's source image."""
    slide = generate_slide(tmp_path_factory.mktemp("slide"), 11, size_mm=(2.8, 2.8), mpp=1.0, deposits=[])
    return max(slide.files, key=lambda p: p.stat().st_size)


def _run(mode: str, base: Path, count: int) -> list[list]:
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", CHILD, mode, str(base), str(count)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    tail = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("DEBUG:"))[-3000:]
    assert proc.returncode == 0, f"{mode} run exited {proc.returncode}:\n{tail}"
    return json.loads(proc.stdout.splitlines()[-1])


def test_seg_outputs_survive_concurrent_encoders_unchanged(slide_base: Path) -> None:
    stressed = _run("stress", slide_base, 40)
    assert len(stressed) == 40 and min(frames for frames, _ in stressed) >= 1
    assert sum(frames for frames, _ in stressed) > 400  # enough JPEG 2000 frames to stress the encoder
    assert stressed == _run("quiet", slide_base, 40)
