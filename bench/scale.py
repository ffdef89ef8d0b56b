"""Embedded vs scale-out (``executor.kind: celery``): the same MR series through both, one run.

The same ``--series N`` (default 20) synthetic T2 axial pelvic series (dicomnode.synth.mr,
24 x 80 x 80, the demo model's own grid: a few seconds of real nnU-Net work each on CPU)
go through the mri-lln pipeline (models/lln-t2-demo) twice, with one config that differs
only in its ``executor`` section:

(1) embedded: ``dicomnode serve`` (default executor, one process, its warm worker child);
(2) celery: ``dicomnode serve --role all`` (receiver + dispatcher in one process, a Celery
    worker as its child process) on a private RabbitMQ and PostgreSQL started here
    (tests/rabbitserver.py, tests/pgserver.py), one worker.

Both: worker.device cpu, worker.concurrency 1, torch threads 1 (``--threads``), the default
t2-pelvis route (its match, as in dicomnode/defaults/dicomnode.yaml) sending SEG + SR +
viewer SR to a DIMSE PACS (pynetdicom SCP in this process). One warm-up series (model
load) first, then the N series back to back, one dcmtk ``storescu`` association each,
without waiting in between.

From the job records (the job store APIs, as ``dicomnode jobs show`` reads them): per-series
latency = job created (series complete) → last destination's ``sent_at``; its median and
p90; throughput = N / (last ``sent_at`` - first ``created``) in series/min; the ratios
celery/embedded and the per-series overhead (celery minus embedded median latency, ms).
Latency includes the wait behind earlier series (one worker, sent back to back), so it
also depends on how fast each mode takes the series in (``send_s``, ``created_spread_s``).
Hence also: the span not spent in the pipeline per series (``outside_pipeline_per_series_ms``
= (span - sum of ``pipeline_seconds``) / N), and ``--isolated K`` (default 5) further series
sent one at a time, each after the previous was delivered: latency without queueing and
its part outside the pipeline (latency - ``pipeline_seconds``), split at the start of the
send (the delivery's last attempt) into hand-offs and the send itself, which the noise
of a shared machine on the nnU-Net time does not enter. CPU seconds per series of the back-to-back batch
(user + system, from /proc, over the node's process tree, and apart the broker's and the
database's), which contention changes far less than wall time.
Run inside a network namespace (``make bench`` does). Not a test: no thresholds here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(TESTS))  # the private PostgreSQL and RabbitMQ servers of the tests

from bench import free_port, save_results, stop, wait_echo  # noqa: E402

BUNDLE = REPO / "models" / "lln-t2-demo"
DEFAULTS = REPO / "dicomnode" / "defaults" / "dicomnode.yaml"
WARMUP_SEED = 10_000


def _cases(folder: Path, seeds: list[int]) -> list[tuple[str, list[Path]]]:
    """One synthetic T2 axial series per seed (default phantom grid): (SeriesInstanceUID, files)."""
    from dicomnode.synth.mr import generate_case

    cases = []
    for seed in seeds:
        case = generate_case(seed)
        cases.append((str(case.datasets[0].SeriesInstanceUID), case.write(folder / f"s{seed}")))
    return cases


def _pacs(received: list[float]) -> Any:
    """A pynetdicom storage SCP (AE ``PACS``) on a free port; ``received`` gets each arrival time."""
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt

    def handle(event: Any) -> int:
        received.append(time.time())
        return 0x0000

    ae = AE(ae_title="PACS")
    for context in StoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    return ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])


def _config(tmp: Path, pacs_port: int, threads: int, executor: dict[str, Any] | None) -> tuple[Path, int]:
    """The node config of one mode (only ``executor`` differs between modes); its path and DICOM port."""
    import yaml

    route = next(r for r in yaml.safe_load(DEFAULTS.read_text())["routes"] if r["pipeline"] == "mri-lln")
    route = {**route, "destinations": ["pacs"], "settings": {"threads": threads}}
    node_port = free_port()
    config: dict[str, Any] = {
        "node": {"port": node_port}, "spool": {"path": str(tmp / "spool"), "min_free_mb": 1},
        "assembly": {"quiet_s": 2},
        "models": {"lln-t2-demo": {"path": str(BUNDLE)}},
        "worker": {"device": "cpu", "concurrency": 1},
        "destinations": {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}},
        "routes": [route],
        "http": {"port": free_port()}, "log": {"format": "json", "level": "INFO"},
    }
    if executor:
        config["executor"] = executor
    path = tmp / "dicomnode.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, node_port


@contextmanager
def _node(config: Path, port: int, argv: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``dicomnode serve`` with ``argv`` until the block ends (SIGTERM, then SIGKILL)."""
    with log_path.open("wb") as log:
        node = subprocess.Popen([sys.executable, "-m", "dicomnode", "serve", "--config", str(config), *argv],
                                stdout=log, stderr=log, cwd=REPO, env=_env())
    try:
        try:
            wait_echo(port, "DICOMNODE", timeout_s=180)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; node log: {log_path.read_text(errors='replace')[-3000:]}") from exc
        yield node
    finally:
        stop(node)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _send(port: int, paths: list[Path]) -> None:
    """One dcmtk ``storescu`` association with every file of a series."""
    subprocess.run(["storescu", "-aec", "DICOMNODE", "127.0.0.1", str(port), *map(str, paths)],
                   check=True, capture_output=True, timeout=300)


def _open_store(config_path: Path) -> Any:
    """The job store the node of ``config_path`` writes (the spool's files, or PostgreSQL)."""
    from dicomnode.config import load_config
    from dicomnode.jobstore import FileJobStore
    from dicomnode.spool import Spool

    config = load_config(config_path)
    if config.executor.celery:
        from dicomnode.jobstore_pg import open_ledger

        return open_ledger(config, Spool(config.spool.path, shared=True))
    return FileJobStore(Spool(config.spool.path))


def _wait_jobs(store: Any, uids: set[str], alive: Callable[[], bool], timeout_s: float) -> list[Any]:
    """The job records of ``uids`` once every one has ended (one job per series expected)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [job for job in (store.get(i) for i in store.ids()) if job.series_uid in uids]
        if len(found) >= len(uids) and all(job.state.ended for job in found):
            return found
        if not alive():
            raise RuntimeError("the node exited")
        time.sleep(1.0)
    raise RuntimeError(f"{len(uids)} series not all done within {timeout_s:.0f} s")


def _require_done(found: list[Any]) -> None:
    """Every job ran the pipeline and delivered (a refused or failed series measures nothing)."""
    bad = [f"{job.job_id} {job.state.value} {job.error or job.refusal}" for job in found if job.state.value != "done"]
    if bad:
        raise RuntimeError(f"jobs not done: {bad}")


def _figures(found: list[Any]) -> dict[str, Any]:
    """Latency (created → last sent_at) median and p90, throughput, from the job records."""
    _require_done(found)
    delivered = {job.job_id: max(d.sent_at for d in job.destinations.values()) for job in found}
    latency = sorted(delivered[job.job_id] - job.created for job in found)
    span = max(delivered.values()) - min(job.created for job in found)
    return {"series": len(found), "latency_median_s": round(statistics.median(latency), 3),
            "latency_p90_s": round(statistics.quantiles(latency, n=10, method="inclusive")[-1], 3),
            "throughput_series_per_min": round(len(found) / span * 60, 2), "span_s": round(span, 2),
            "created_spread_s": round(max(job.created for job in found) - min(job.created for job in found), 2),
            "pipeline_median_s": round(statistics.median(job.pipeline_seconds for job in found), 3),
            "outside_pipeline_per_series_ms": round((span - sum(job.pipeline_seconds for job in found))
                                                    / len(found) * 1000, 1),
            "latency_each_s": [round(t, 3) for t in latency]}


def _cpu_s(roots: list[int]) -> float:
    """CPU seconds (user + system) used so far by the processes ``roots`` and all below them."""
    parent, ticks = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        pid = int(stat.parent.name)
        parent[pid], ticks[pid] = int(fields[1]), int(fields[11]) + int(fields[12])
    found, todo = set(), [r for r in roots if r in ticks]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += [p for p, pp in parent.items() if pp == pid and p not in found]
    return sum(ticks[p] for p in found) / os.sysconf("SC_CLK_TCK")


def _isolated(store: Any, port: int, cases: list[tuple[str, list[Path]]], alive: Callable[[], bool],
              timeout_s: float) -> dict[str, Any]:
    """Each series alone (the previous one delivered first): latency without queueing."""
    found = []
    for uid, paths in cases:
        _send(port, paths)
        found += _wait_jobs(store, {uid}, alive, timeout_s)
    _require_done(found)
    latency = [max(d.sent_at for d in job.destinations.values()) - job.created for job in found]
    outside = [t - job.pipeline_seconds for t, job in zip(latency, found, strict=True)]
    send_at = [max(d.history[-1].at for d in job.destinations.values()) for job in found]
    before = [at - job.created - job.pipeline_seconds for at, job in zip(send_at, found, strict=True)]
    sending = [t - before_t - job.pipeline_seconds for t, before_t, job in zip(latency, before, found, strict=True)]
    return {"isolated_latency_median_s": round(statistics.median(latency), 3),
            "isolated_outside_pipeline_median_ms": round(statistics.median(outside) * 1000, 1),
            "isolated_to_send_outside_pipeline_median_ms": round(statistics.median(before) * 1000, 1),
            "isolated_send_median_ms": round(statistics.median(sending) * 1000, 1),
            "isolated_latency_each_s": [round(t, 3) for t in latency]}


def run_mode(name: str, cases: list[tuple[str, list[Path]]], alone: list[tuple[str, list[Path]]],
             args: argparse.Namespace, executor: dict[str, Any] | None, argv: list[str],
             services: tuple[int, ...] = ()) -> dict[str, Any]:
    """A warm-up series, ``cases`` back to back, then ``alone`` one at a time, through one node;
    ``services``: the broker's and database's processes, whose CPU time is counted apart."""
    received: list[float] = []
    server = _pacs(received)
    try:
        with tempfile.TemporaryDirectory(prefix=f"bench-scale-{name}-") as tmp_name:
            tmp = Path(tmp_name)
            config, port = _config(tmp, server.server_address[1], args.threads, executor)
            with _node(config, port, argv, tmp / "node.log") as node:
                store = _open_store(config)
                alive = lambda: node.poll() is None  # noqa: E731
                try:
                    warm = alone[0]  # the model loads on the first job
                    _send(port, warm[1])
                    _wait_jobs(store, {warm[0]}, alive, args.timeout)
                    started, cpu = time.time(), (_cpu_s([node.pid]), _cpu_s(list(services)))
                    for _, paths in cases:
                        _send(port, paths)
                    sent_s = time.time() - started
                    found = _wait_jobs(store, {uid for uid, _ in cases}, alive, args.timeout)
                    cpu = (_cpu_s([node.pid]) - cpu[0], _cpu_s(list(services)) - cpu[1])
                    isolated = _isolated(store, port, alone[1:], alive, args.timeout)
                finally:
                    if hasattr(store, "close"):
                        store.close()
            return {"mode": name, **_figures(found), "send_s": round(sent_s, 2),
                    "cpu_node_s_per_series": round(cpu[0] / len(found), 3),
                    "cpu_broker_db_s_per_series": round(cpu[1] / len(found), 3), **isolated,
                    "pacs_instances": len(received)}
    finally:
        server.shutdown()


def run_celery(cases: list[tuple[str, list[Path]]], alone: list[tuple[str, list[Path]]],
               args: argparse.Namespace) -> dict[str, Any]:
    """The celery mode on a private PostgreSQL and RabbitMQ, started for it and stopped after."""
    from pgserver import fresh_database, postgres_server
    from rabbitserver import rabbit_server

    with postgres_server() as pg, rabbit_server() as rabbit:
        executor = {"kind": "celery", "broker_url": rabbit.url, "database_url": fresh_database(pg)}
        postmaster = Path(pg.split("host=", 1)[1].split()[0]) / "data" / "postmaster.pid"
        services = (int(postmaster.read_text().split()[0]), *([rabbit.proc.pid] if rabbit.proc else []))
        return run_mode("celery", cases, alone, args, executor, ["--role", "all"], services)


#: Figures of each mode in the printed table, in this order.
TABLE = ("latency_median_s", "latency_p90_s", "throughput_series_per_min", "pipeline_median_s",
         "outside_pipeline_per_series_ms", "span_s", "created_spread_s", "send_s", "cpu_node_s_per_series",
         "cpu_broker_db_s_per_series", "isolated_latency_median_s",
         "isolated_outside_pipeline_median_ms", "isolated_to_send_outside_pipeline_median_ms",
         "isolated_send_median_ms")


def _table(rows: list[dict[str, Any]], ratios: dict[str, float]) -> str:
    """One line per figure, one column per mode, then the ratios and overheads."""
    lines = [f"{'':<38}" + "".join(f"{row['mode']:>12}" for row in rows)]
    lines += [f"{key:<38}" + "".join(f"{row[key]!s:>12}" for row in rows) for key in TABLE]
    lines += [f"{key:<38}{value:>12}" for key, value in ratios.items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="embedded vs celery executor, same series, one worker")
    parser.add_argument("--series", type=int, default=20, help="series sent back to back per mode")
    parser.add_argument("--isolated", type=int, default=5,
                        help="series then sent one at a time (each after the previous was delivered)")
    parser.add_argument("--threads", type=int, default=1,
                        help="route settings.threads (torch threads); 1 leaves the other core to the node's "
                             "other processes, the broker and the database, and keeps the nnU-Net time steady")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the jobs of a mode")
    parser.add_argument("--only", choices=("embedded", "celery"), help="run one mode only")
    args = parser.parse_args()
    if not (BUNDLE / "model.yaml").is_file():
        print(f"bench/scale.py needs {BUNDLE}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-scale-cases-") as tmp:
        cases = _cases(Path(tmp), list(range(args.series)))
        alone = _cases(Path(tmp), list(range(WARMUP_SEED, WARMUP_SEED + 1 + args.isolated)))
        rows = []
        if args.only in (None, "embedded"):
            rows.append(run_mode("embedded", cases, alone, args, None, []))
        if args.only in (None, "celery"):
            rows.append(run_celery(cases, alone, args))
    result: dict[str, Any] = {"series": args.series, "threads": args.threads, "celery_roles": "--role all",
                              "modes": rows}
    if len(rows) == 2:
        emb, cel = rows
        result["ratios"] = {
            "latency_median_celery_vs_embedded": round(cel["latency_median_s"] / emb["latency_median_s"], 3),
            "latency_p90_celery_vs_embedded": round(cel["latency_p90_s"] / emb["latency_p90_s"], 3),
            "throughput_celery_vs_embedded": round(cel["throughput_series_per_min"]
                                                   / emb["throughput_series_per_min"], 3),
            "overhead_per_series_ms": round((cel["latency_median_s"] - emb["latency_median_s"]) * 1000, 1),
            "overhead_isolated_ms": round((cel["isolated_latency_median_s"] - emb["isolated_latency_median_s"])
                                          * 1000, 1),
            "overhead_isolated_outside_pipeline_ms": round(cel["isolated_outside_pipeline_median_ms"]
                                                           - emb["isolated_outside_pipeline_median_ms"], 1),
            "overhead_throughput_outside_pipeline_ms": round(cel["outside_pipeline_per_series_ms"]
                                                             - emb["outside_pipeline_per_series_ms"], 1),
            "cpu_per_series_celery_vs_embedded": round(
                (cel["cpu_node_s_per_series"] + cel["cpu_broker_db_s_per_series"]) / emb["cpu_node_s_per_series"], 3),
            "overhead_cpu_per_series_ms": round((cel["cpu_node_s_per_series"] + cel["cpu_broker_db_s_per_series"]
                                                 - emb["cpu_node_s_per_series"]) * 1000, 1)}
    print(_table(rows, result.get("ratios", {})))
    print(json.dumps(result))
    save_results("scale", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
