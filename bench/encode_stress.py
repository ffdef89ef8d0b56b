"""Which concurrent native encode is unsafe? Stress test behind issue 8 (WSI worker segfault).

Each mode runs in a fresh subprocess (a segfault must not take this script down) and
encodes many single-bit SEG frames of varied sizes and layouts with pylibjpeg-openjpeg's
``encode_array`` (what highdicom calls for JPEG 2000 Lossless BINARY SEG frames), with
Python logging on at DEBUG to stderr as in the worker child, optionally while another
thread encodes PNG previews with Pillow:

    j2k-threads      frames on a 4-thread pool
    j2k-threads-quiet  same, but the ``openjpeg`` logger silenced (level CRITICAL)
    png-threads      only PNG encodes, on a 4-thread pool
    j2k-serial+png   frames in one thread, PNG encodes in another (what the node does now)

Prints ``ok`` or the exit status per mode. Not a test: run it when upgrading
pylibjpeg-openjpeg or Pillow (``.venv/bin/python bench/encode_stress.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

CHILD = r'''
import faulthandler, io, logging, sys, threading
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from openjpeg.utils import encode_array
from PIL import Image
faulthandler.enable()
mode, n = sys.argv[1], int(sys.argv[2])
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
if mode.endswith("quiet"):
    logging.getLogger("openjpeg").setLevel(logging.CRITICAL)

def frame(i):
    rng = np.random.default_rng(i)
    h, w = int(rng.integers(32, 257)), int(rng.integers(32, 257))
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(0, 5))):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(2, 90)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    return mask

def j2k(i):
    return len(encode_array(frame(i), bits_stored=1, photometric_interpretation=2, use_mct=False))

def png(i):
    img = Image.fromarray((np.random.default_rng(i).random((512, 512, 3)) * 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return len(buf.getvalue())

if mode.startswith("j2k-threads"):
    with ThreadPoolExecutor(4) as pool:
        total = sum(pool.map(j2k, range(n)))
elif mode == "png-threads":
    with ThreadPoolExecutor(4) as pool:
        total = sum(pool.map(png, range(n // 20)))
else:
    stop = threading.Event()
    def pngs():
        i = 0
        while not stop.is_set():
            png(i); i += 1
    t = threading.Thread(target=pngs); t.start()
    try:
        total = sum(j2k(i) for i in range(n))
    finally:
        stop.set(); t.join()
print("encoded", total, "bytes", file=sys.stdout)
'''

MODES = ("j2k-threads", "j2k-threads-quiet", "png-threads", "j2k-serial+png")


def run(mode: str, frames: int) -> tuple[str, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(frames)], capture_output=True, text=True,
                          timeout=600)
    seconds = time.perf_counter() - started
    if proc.returncode == 0:
        return "ok", seconds
    last = [line for line in proc.stderr.splitlines() if "Fatal Python error" in line or "Error" in line]
    return f"exit {proc.returncode} ({last[0] if last else 'no message'})", seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("modes", nargs="*", default=list(MODES))
    args = parser.parse_args()
    for mode in args.modes:
        for _ in range(args.repeats):
            outcome, seconds = run(mode, args.frames)
            print(f"{mode:<18} {outcome:<60} {seconds:6.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
