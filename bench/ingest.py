"""Ingest benchmark: the same instances, the same sender, two receivers, one run.

(a) dcmtk ``storescp`` writing files to disk (the reference; no fsync), and
(b) ``dicomnode serve`` acknowledging each instance only after temp file + fsync + rename.

Data: >= 1,000 synthetic MR instances (384 x 384, 16-bit, as a scanner sends them) and
real WSI frames (the CMU-1 level-0 instance from ../shared/testdata, 30 JPEG frames,
copied with new UIDs). Senders, each to both receivers: dicomnode's replay sender
(pynetdicom, one association) and dcmtk ``storescu -R -xy`` (one association, the files' own
transfer syntaxes; it sends the file bytes as they are, so it is the faster sender).
Reports instances/s, MB/s and the ratio node / storescp per sender; median of repeats.

dcmtk tools run with ``TCP_NODELAY=1`` (dcmtk's switch for Nagle's algorithm, off in
Debian's build): without it storescp answers every C-STORE ~45 ms late (Nagle + delayed
ACK), which made an earlier version of this benchmark flatter dicomnode by 10x.
``--dcmtk-nodelay 0`` measures the tools as installed.
Run with ``make bench`` (inside ``unshare -n``: storescp binds all interfaces).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import yaml
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import free_port, save_results, wait_echo  # noqa: E402

DCMTK_ENV = dict(os.environ)
from dicomnode.replay import scan, send  # noqa: E402


def make_mr(folder: Path, n: int, size: int) -> None:
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4000, (size, size), dtype=np.uint16)
    study, series = generate_uid(), generate_uid()
    folder.mkdir(parents=True)
    for i in range(n):
        ds = base.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.roll(pixels, i, axis=0).tobytes()
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.InstanceNumber = i + 1
        ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)


def make_wsi(folder: Path, source: Path, copies: int) -> None:
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    for i in range(copies):
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"{i:04d}.dcm", enforce_file_format=True)


def storescp(out: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    out.mkdir(parents=True)
    log = (out.parent / f"{out.name}.log").open("wb")  # read on failure (timed_send)
    proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "+xa", "-od", str(out), str(port)],
                            stdout=log, stderr=log, env=DCMTK_ENV)
    wait_echo(port, "STORESCP")
    return proc, port


def dicomnode(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = {"node": {"port": port}, "spool": {"path": str(work / "spool"), "min_free_mb": 64},
              "assembly": {"quiet_s": 3600, "max_wait_s": 7200}, "http": {"port": 0},
              "log": {"level": "WARNING"}}
    work.mkdir(parents=True)
    (work / "c.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "dicomnode", "serve", "--config", str(work / "c.yaml")],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_echo(port, "DICOMNODE")
    return proc, port


def timed_send(files: list, port: int, called: str, sender: str) -> float:
    if sender == "storescu":
        started = time.monotonic()
        command = ["storescu", "-R", "-xy", "-aec", called, "127.0.0.1", str(port), *(str(f.path) for f in files)]
        proc = subprocess.run(command, capture_output=True, text=True, env=DCMTK_ENV)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{called}: storescu failed: {proc.stderr[-1000:]}")
        return seconds
    started = time.monotonic()
    statuses = send(files, "127.0.0.1", port, called=called)
    seconds = time.monotonic() - started
    ok = sum(c for t, c in statuses.items() if t.startswith("0x0000"))
    if ok != len(files):
        logs = "".join(p.read_text(errors="replace")[-1500:] for p in files[0].path.parents[1].glob("*.log"))
        raise RuntimeError(f"{called}: only {ok}/{len(files)} stored: {dict(statuses)}\n{logs}")
    return seconds


def run_once(files: list, tmp: Path, tag: str, sender: str) -> dict[str, float]:
    results = {}
    for name, start in (("storescp", storescp), ("dicomnode", dicomnode)):
        proc, port = start(tmp / f"{tag}-{name}")
        try:
            results[name] = timed_send(files, port, "STORESCP" if name == "storescp" else "DICOMNODE", sender)
        finally:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(tmp / f"{tag}-{name}", ignore_errors=True)
    return results


def report(label: str, sender: str, files: list, runs: list[dict[str, float]]) -> dict[str, object]:
    count, size = len(files), sum(f.size for f in files) / 1e6
    row: dict[str, object] = {"dataset": label, "sender": sender, "dcmtk_tcp_nodelay": DCMTK_ENV["TCP_NODELAY"],
                              "instances": count, "MB": round(size, 1)}
    for name in ("storescp", "dicomnode"):
        secs = statistics.median(r[name] for r in runs)
        row[f"{name}_inst_per_s"] = round(count / secs, 1)
        row[f"{name}_MB_per_s"] = round(size / secs, 1)
    ratios = [r["storescp"] / r["dicomnode"] for r in runs]
    row["ratio_node_vs_storescp"] = round(statistics.median(ratios), 3)
    row["ratios_each_run"] = [round(r, 3) for r in ratios]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mr", type=int, default=1000, help="MR instances")
    parser.add_argument("--size", type=int, default=384, help="MR rows/columns")
    parser.add_argument("--wsi-copies", type=int, default=40, help="copies of the 30-frame WSI instance")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--senders", nargs="+", choices=("replay", "storescu"), default=["replay", "storescu"])
    parser.add_argument("--dcmtk-nodelay", choices=("0", "1"), default="1", help="TCP_NODELAY for storescp/storescu")
    args = parser.parse_args()
    DCMTK_ENV["TCP_NODELAY"] = args.dcmtk_nodelay
    wsi_dir = REPO.parent / "shared" / "testdata" / "wsi" / "cmu1-small-region-pyramid-wsi2dcm"
    source = wsi_dir / "level-0-frames-0-30.dcm"
    rows = []
    with tempfile.TemporaryDirectory(prefix="dicomnode-bench-") as tmp_name:
        tmp = Path(tmp_name)
        make_mr(tmp / "mr", args.mr, args.size)
        datasets = [("MR", scan([tmp / "mr"])[0])]
        if source.is_file():
            make_wsi(tmp / "wsi", source, args.wsi_copies)
            datasets.append((f"WSI ({args.wsi_copies * 30} JPEG frames)", scan([tmp / "wsi"])[0]))
        else:
            print(f"WSI part skipped: {source} not found", file=sys.stderr)
        for label, files in datasets:
            for sender in args.senders:
                runs = [run_once(files, tmp, f"{label[:3]}{sender}{i}", sender) for i in range(args.repeats)]
                rows.append(report(label, sender, files, runs))
    for row in rows:
        print(json.dumps(row))
    save_results("ingest", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
