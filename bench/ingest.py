"""Ingest benchmark: the same instances, the same sender, several receivers, one run.

Receivers, in turn within each round: dcmtk ``storescp`` writing files to disk (the
reference; no fsync), ``dicomnode serve`` (acknowledges each instance only when durable:
group-committed ``syncfs``), optionally ``dicomnode-stock`` (the same with
``node.pynetdicom_tuning: false``) and the ladder ``ladder-noop``, ``ladder-parse``,
``ladder-durable`` (bench/ladder_scp.py: the node's receive path with steps taken out,
to see what each step costs).

Rows: MR over 1 and over 4 concurrent associations (``storescu -R -xy``, files split
evenly), real WSI frames (the CMU-1 level-0 instance from ../shared/testdata, 30 JPEG
frames, copied with new UIDs), one large native instance (``--big-mb``, default 1,000 MB;
its row reports the receivers' peak RSS), and the sender comparison: ``dicomnode replay``
against ``storescu``, both to a fresh storescp (with each sender's CPU ms per instance).
Each row gives instances/s, MB/s, the receiver's CPU ms per instance (from /proc, all
threads), its peak RSS, and the ratio to storescp per round and as the median of rounds.

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
import resource
import shutil
import statistics
import struct
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

from bench import free_port, save_results, stop, wait_echo  # noqa: E402

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


def dicomnode(work: Path, **node: object) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = {"node": {"port": port, "max_associations": 16, **node},
              "spool": {"path": str(work / "spool"), "min_free_mb": 64},
              "assembly": {"quiet_s": 3600, "max_wait_s": 7200}, "http": {"port": 0}, "routes": [],
              "log": {"level": "WARNING"}}
    work.mkdir(parents=True)
    (work / "c.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "dicomnode", "serve", "--config", str(work / "c.yaml")],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_echo(port, "DICOMNODE")
    return proc, port


def ladder(work: Path, mode: str) -> tuple[subprocess.Popen[bytes], int]:
    """bench/ladder_scp.py: the node's receive path with steps taken out (``noop``, ``parse``, ``durable``)."""
    port = free_port()
    work.mkdir(parents=True)
    argv = [sys.executable, str(REPO / "bench" / "ladder_scp.py"), mode, str(port), str(work / "spool")]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_echo(port, "DICOMNODE")
    return proc, port


RECEIVERS = {
    "storescp": storescp,
    "ladder-noop": lambda work: ladder(work, "noop"),
    "ladder-parse": lambda work: ladder(work, "parse"),
    "ladder-durable": lambda work: ladder(work, "durable"),
    "dicomnode": dicomnode,
    "dicomnode-stock": lambda work: dicomnode(work, pynetdicom_tuning=False),
    "dicomnode-2rx": lambda work: dicomnode(work, receivers=2),
}


def _tree(pid: int) -> list[int]:
    kids = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(k) for k in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):  # a thread or process ended meanwhile
        pass
    return [pid] + [p for k in kids for p in _tree(k)]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (all threads) so far."""
    total = 0.0
    for proc in _tree(pid):
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def storescu(files: list, port: int, called: str) -> subprocess.Popen[str]:
    command = ["storescu", "-R", "-xy", "-aec", called, "127.0.0.1", str(port), *(str(f.path) for f in files)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=DCMTK_ENV)


def timed_send(files: list, port: int, called: str, sender: str, assocs: int = 1) -> float:
    """Seconds to send ``files`` over ``assocs`` concurrent associations (files split evenly)."""
    parts = [files[i::assocs] for i in range(assocs)]
    started = time.monotonic()
    if sender == "storescu":
        procs = [storescu(part, port, called) for part in parts]
        errors = [p.communicate()[1][-1000:] for p in procs if p.wait() != 0]
        if errors:
            raise RuntimeError(f"{called}: storescu failed: {errors[0]}")
        return time.monotonic() - started
    statuses = send(files, "127.0.0.1", port, called=called)
    seconds = time.monotonic() - started
    ok = sum(c for t, c in statuses.items() if t.startswith("0x0000"))
    if ok != len(files):
        raise RuntimeError(f"{called}: only {ok}/{len(files)} stored: {dict(statuses)}")
    return seconds


def run_once(files: list, tmp: Path, tag: str, sender: str, assocs: int, receivers: list[str]) -> dict[str, float]:
    """One round: each receiver in turn gets the same files; seconds and server CPU s each."""
    results: dict[str, float] = {}
    for name in receivers:
        proc, port = RECEIVERS[name](tmp / f"{tag}-{name}")
        try:
            cpu0 = cpu_s(proc.pid)
            results[name] = timed_send(files, port, "STORESCP" if name == "storescp" else "DICOMNODE", sender, assocs)
            results[f"{name}_cpu"] = cpu_s(proc.pid) - cpu0
            results[f"{name}_rss"] = peak_rss_mb(proc.pid)
        finally:
            stop(proc)
        shutil.rmtree(tmp / f"{tag}-{name}", ignore_errors=True)
    return results


def report(label: str, sender: str, assocs: int, files: list, runs: list[dict[str, float]],
           receivers: list[str]) -> dict[str, object]:
    count, size = len(files), sum(f.size for f in files) / 1e6
    row: dict[str, object] = {"dataset": label, "sender": sender, "associations": assocs,
                              "instances": count, "MB": round(size, 1)}
    for name in receivers:
        secs = statistics.median(r[name] for r in runs)
        row[f"{name}_inst_per_s"] = round(count / secs, 1)
        row[f"{name}_MB_per_s"] = round(size / secs, 1)
        row[f"{name}_cpu_ms_per_inst"] = round(1000 * statistics.median(r[f"{name}_cpu"] for r in runs) / count, 2)
        row[f"{name}_peak_rss_MB"] = round(max(r[f"{name}_rss"] for r in runs), 1)
        if name != "storescp":
            ratios = [r["storescp"] / r[name] for r in runs]
            row[f"ratio_{name}_vs_storescp"] = round(statistics.median(ratios), 3)
            row[f"ratios_{name}_each_run"] = [round(r, 3) for r in ratios]
    return row


def sender_cpu_s(sender: str) -> float:
    """User + system CPU seconds used so far by the sender: storescu (reaped children) or
    replay (this process, which runs ``dicomnode.replay.send``)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if sender == "storescu" else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def replay_row(files: list, tmp: Path, repeats: int) -> dict[str, object]:
    """The sender comparison: replay and storescu, each to a fresh storescp, alternating;
    with each sender's CPU ms per instance (all its threads), steadier than the ratio on a
    shared machine."""
    runs = []
    for i in range(repeats):
        run = {}
        for sender in ("storescu", "replay"):
            proc, port = storescp(tmp / f"snd{sender}{i}")
            try:
                cpu0 = sender_cpu_s(sender)
                run[sender] = timed_send(files, port, "STORESCP", sender)
                run[f"{sender}_cpu"] = sender_cpu_s(sender) - cpu0
            finally:
                proc.terminate()
                proc.wait(30)
            shutil.rmtree(tmp / f"snd{sender}{i}", ignore_errors=True)
        runs.append(run)
    ratios = [r["storescu"] / r["replay"] for r in runs]
    row: dict[str, object] = {"dataset": "MR", "sender comparison": "replay vs storescu, to storescp",
                              "instances": len(files)}
    for sender in ("storescu", "replay"):
        row[f"{sender}_inst_per_s"] = round(len(files) / statistics.median(r[sender] for r in runs), 1)
        row[f"{sender}_cpu_ms_per_inst"] = round(1000 * statistics.median(r[f"{sender}_cpu"] for r in runs)
                                                 / len(files), 3)
    return {**row, "ratio_replay_vs_storescu": round(statistics.median(ratios), 3),
            "ratios_each_run": [round(r, 3) for r in ratios]}


def make_big(folder: Path, megabytes: int) -> None:
    """One VL WSI instance of ``megabytes`` of native RGB frames (512 x 512), written in pieces."""
    base = pydicom.dcmread(WSI_SOURCE, stop_before_pixels=True)
    frame = 512 * 512 * 3
    frames = max(1, megabytes * 1_000_000 // frame)
    base.SOPInstanceUID = base.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    base.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    base.Rows = base.Columns = 512
    base.NumberOfFrames, base.PhotometricInterpretation = frames, "RGB"
    base.SamplesPerPixel, base.PlanarConfiguration = 3, 0
    base.BitsAllocated, base.BitsStored, base.HighBit, base.PixelRepresentation = 8, 8, 7, 0
    folder.mkdir(parents=True)
    path = folder / "big.dcm"
    base.save_as(path, enforce_file_format=True)
    chunk = np.random.default_rng(1).integers(0, 255, frame, dtype=np.uint8).tobytes()
    with open(path, "ab") as fh:  # (7FE0,0010) OB, 4-byte length, then the frames
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, frame * frames))
        for _ in range(frames):
            fh.write(chunk)


WSI_SOURCE = (REPO.parent / "shared" / "testdata" / "wsi" / "cmu1-small-region-pyramid-wsi2dcm"
              / "level-0-frames-0-30.dcm")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mr", type=int, default=1000, help="MR instances")
    parser.add_argument("--size", type=int, default=384, help="MR rows/columns")
    parser.add_argument("--wsi-copies", type=int, default=40, help="copies of the 30-frame WSI instance")
    parser.add_argument("--big-mb", type=int, default=1000, help="size of the one large instance (peak RSS); 0: skip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--receivers", nargs="+", choices=sorted(RECEIVERS),
                        default=["storescp", "dicomnode", "dicomnode-2rx"])
    parser.add_argument("--rows", nargs="+", choices=("mr1", "mr4", "wsi", "big", "replay"),
                        default=["mr1", "mr4", "wsi", "big", "replay"], help="which rows to measure")
    parser.add_argument("--dcmtk-nodelay", choices=("0", "1"), default="1", help="TCP_NODELAY for storescp/storescu")
    args = parser.parse_args()
    DCMTK_ENV["TCP_NODELAY"] = args.dcmtk_nodelay
    rows = []
    with tempfile.TemporaryDirectory(prefix="dicomnode-bench-") as tmp_name:
        tmp = Path(tmp_name)
        make_mr(tmp / "mr", args.mr, args.size)
        mr = scan([tmp / "mr"])[0]
        plan = [("MR", mr, n) for n, row in ((1, "mr1"), (4, "mr4")) if row in args.rows]
        if WSI_SOURCE.is_file():
            if "wsi" in args.rows:
                make_wsi(tmp / "wsi", WSI_SOURCE, args.wsi_copies)
                plan.append((f"WSI ({args.wsi_copies * 30} JPEG frames)", scan([tmp / "wsi"])[0], 1))
            if args.big_mb and "big" in args.rows:
                make_big(tmp / "big", args.big_mb)
                plan.append((f"one {args.big_mb} MB instance", scan([tmp / "big"])[0], 1))
        else:
            print(f"WSI part skipped: {WSI_SOURCE} not found", file=sys.stderr)
        for label, files, assocs in plan:
            repeats = 1 if label.startswith("one ") else args.repeats
            runs = [run_once(files, tmp, f"{label[:3]}{assocs}-{i}", "storescu", assocs, args.receivers)
                    for i in range(repeats)]
            rows.append(report(label, "storescu", assocs, files, runs, args.receivers))
            print(json.dumps(rows[-1]), flush=True)
        if "replay" in args.rows:
            rows.append(replay_row(mr, tmp, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    save_results("ingest", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
