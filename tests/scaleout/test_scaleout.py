"""Scale-out mode (executor.kind: celery) with real processes.

Every role is a ``dicomnode serve --role`` process; RabbitMQ and PostgreSQL are private
servers (tests/rabbitserver.py, tests/pgserver.py) and Orthanc is the PACS. Faults are
real: ``kill -9`` of a worker mid-job and of a receiver mid-association, the broker and
the database stopped and started again, an input that segfaults its worker every time.
The plumbing test pipeline (tests/plumbing.py) runs the jobs: it reads every instance and
writes a real SR with deterministic UIDs, so "one output per series" is checked in Orthanc.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import yaml
from cluster import REPO, TESTS, Role, scale_config
from conftest import mr_series, node_config
from netutil import store_association, wait_for
from orthanc import Orthanc, netns_skip, orthanc
from pgserver import fresh_database, postgres_server, start_server, stop_server
from rabbitserver import RabbitServer, rabbit_server

pytestmark = [pytest.mark.timeout(900)]  # everything here listens on 127.0.0.1 only, but Orthanc
_names = itertools.count()
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


@pytest.fixture(scope="module")
def pg() -> Iterator[str]:
    with postgres_server() as conninfo:
        yield conninfo


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitServer]:
    with rabbit_server() as server:
        yield server


class Cluster:
    """Role processes of one deployment, sharing one config, spool, database and broker."""

    def __init__(self, tmp_path: Path, config: Path) -> None:
        self.tmp_path, self.config = tmp_path, config
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)
        self.roles: list[Role] = []

    def role(self, role: str, *extra: str, wait: bool = True) -> Role:
        proc = Role(self.config, role, f"{role}-{len(self.roles)}", self.logs, *extra)
        self.roles.append(proc)
        return proc.start(wait)

    def results(self) -> dict[str, dict[str, Any]]:
        """Folder-outbox results by source series UID."""
        found = {}
        for path in sorted((self.tmp_path / "outbox").glob("*/*/*/result.json")):
            result = json.loads(path.read_text())
            found[result["series_uid"]] = result
        return found

    def jobs(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "dicomnode", "jobs", *args, "--config", str(self.config)],
                              capture_output=True, text=True, timeout=60, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{REPO}"})
        assert done.returncode == 0, done.stderr
        return done.stdout

    def dump(self) -> str:
        return "\n".join(f"== {r.name}\n{r.tail(3000)}" for r in self.roles)

    def stop(self) -> None:
        for role in self.roles:
            role.stop()


def _cluster_config(tmp_path: Path, pg: str, rabbit: RabbitServer, bundles: dict[str, Path],
                    destinations: dict[str, Any], **executor: Any) -> Path:
    """Routes: HOLD → plumbing-hold, a slide → plumbing, every other MR → plumbing."""
    def route(name: str, model: str, match: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": name, "pipeline": "plumbing:create", "model": model, "destinations": list(destinations),
                "match": {"all": match}}
    routes = [route("hold", "plumbing-hold", [{"tag": "SeriesDescription", "equals": "HOLD"}]),
              route("slide", "plumbing", [{"tag": "SOPClassUID", "equals": WSI_SOP_CLASS}]),
              route("mr", "plumbing", [{"tag": "Modality", "equals": "MR"}])]
    base = node_config(tmp_path, bundles["plumbing"], destinations=destinations, routes=routes,
                       models={name: {"path": str(path)} for name, path in bundles.items()})
    n = next(_names)
    return scale_config(base, broker_url=rabbit.url, database_url=fresh_database(pg),
                        queues={"plumbing:create": f"mri{n}"}, dead_letter_queue=f"dead{n}", **executor)


@pytest.fixture
def make_cluster(tmp_path: Path, pg: str, rabbit: RabbitServer, plumbing_bundle: Any) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(destinations: dict[str, Any] | None = None, **executor: Any) -> Cluster:
        bundles = {"plumbing": plumbing_bundle(crash_on="POISON"),
                   "plumbing-hold": plumbing_bundle(hold_file=str(tmp_path / "release"))}
        dests = destinations or {"outbox": {"type": "folder", "path": str(tmp_path / "outbox")}}
        made.append(Cluster(tmp_path, _cluster_config(tmp_path, pg, rabbit, bundles, dests, **executor)))
        return made[-1]
    try:
        yield make
    finally:
        for cluster in made:
            if os.environ.get("DICOMNODE_SCALE_LOGS"):
                print(cluster.dump())
            cluster.stop()


def _contexts(paths: list[Path]) -> list[tuple[str, str]]:
    found = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
             for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in paths)}
    return sorted(found)


def _send(port: int, paths: list[Path]) -> list[int]:
    """C-STORE ``paths`` over one association; the status of each."""
    assoc = store_association(port, _contexts(paths))
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(p).Status) for p in paths]
    finally:
        assoc.release()


def _slide(folder: Path) -> list[Path]:
    from dicomnode.synth.wsi.pyramid import write_pyramid
    rng = np.random.default_rng(7)
    tissue = rng.integers(120, 230, size=(512, 512, 3), dtype=np.uint8)
    return write_pyramid(folder, lambda x, y, w, h: tissue[y:y + h, x:x + w], (512, 512), 0.5, 7)


def _series_uid(paths: list[Path]) -> str:
    return str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _sr_in_orthanc(pacs: Orthanc) -> list[str]:
    return sorted(i["MainDicomTags"]["SOPInstanceUID"] for i in pacs.instances("SR"))


@netns_skip()
def test_every_series_yields_one_output_set_across_receivers_resends_and_a_killed_worker(
        make_cluster: Any, tmp_path: Path) -> None:
    """2 receivers, 3 workers, 1 dispatcher, Orthanc: an MR series and a slide to different
    receivers, a series split across both, a series sent twice, a worker killed mid-job."""
    with orthanc(tmp_path / "orthanc") as pacs:
        cluster = make_cluster({"pacs": {"type": "dimse", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                         "port": pacs.dicom_port},
                                "outbox": {"type": "folder", "path": str(tmp_path / "outbox")}})
        r1, r2 = cluster.role("receiver"), cluster.role("receiver")
        workers = [cluster.role("worker") for _ in range(3)]
        cluster.role("dispatcher")
        mr, split, hold = (mr_series(tmp_path / n, 4, seed=n, description=d)
                           for n, d in (("a", "AX T2"), ("split", "AX T2"), ("hold", "HOLD")))
        slide = _slide(tmp_path / "slide")
        assert _send(r1.port, mr) == [0] * 4
        assert _send(r2.port, slide) == [0] * len(slide)
        assert _send(r1.port, split[:2]) == [0, 0] and _send(r2.port, split[2:]) == [0, 0]
        assert _send(r2.port, hold) == [0] * 4
        pid_file = wait_for(lambda: next((tmp_path / "spool" / "jobs").glob("*/work/worker.pid"), None), timeout=60)
        owner = _parent(int(pid_file.read_text()))
        killed = next(w for w in workers if w.proc is not None and w.proc.pid == owner)
        killed.kill9()
        (tmp_path / "release").touch()
        wait_for(lambda: len(_sr_in_orthanc(pacs)) == 4, timeout=120)
        assert _send(r2.port, mr) == [0] * 4  # the same series again, after its output was delivered
        wait_for(lambda: cluster.jobs("list", "--state", "done").count("\n") == 1 + 5, timeout=90)
        srs = _sr_in_orthanc(pacs)
        assert len(srs) == len(set(srs)) == 4, srs  # one output per source series
        listing = cluster.jobs("list")
        assert listing.count(" done ") == 5, listing  # the re-sent series ran again: same UIDs, no new copy
        held = json.loads(cluster.jobs("show", _job_of(listing, "hold")))
        assert held["runs"] == 2 and held["crashes"] == 1, held  # the lost run was counted, then re-run
        results = cluster.results()
        assert {uid: r["findings"]["instances"] for uid, r in results.items()} == {
            _series_uid(mr): 4, _series_uid(split): 4, _series_uid(hold): 4, _series_uid(slide): len(slide)}


def _job_of(listing: str, route: str) -> str:
    return next(line.split()[0] for line in listing.splitlines() if f" {route} " in line)


def test_a_poison_series_is_dead_lettered_after_the_delivery_limit_and_blocks_nobody(
        make_cluster: Any, tmp_path: Path) -> None:
    """Its run segfaults the worker's pipeline process every time: rejected back to the
    quorum queue each time until RabbitMQ dead-letters it; ``dicomnode jobs`` shows it
    failed, ``jobs retry`` queues it again, and the other series complete meanwhile."""
    cluster = make_cluster(delivery_limit=1)
    receiver = cluster.role("receiver")
    cluster.role("worker")
    dispatcher = cluster.role("dispatcher")
    poison, fine = mr_series(tmp_path / "p", 2, seed="p", description="POISON"), mr_series(tmp_path / "f", 2, seed="f")
    assert _send(receiver.port, poison) == [0, 0]
    assert _send(receiver.port, fine) == [0, 0]
    wait_for(lambda: _series_uid(fine) in cluster.results(), timeout=60)
    wait_for(lambda: "dead-lettered" in cluster.jobs("list", "--state", "failed"), timeout=90)
    job_id = _job_of(cluster.jobs("list", "--state", "failed"), "mr")
    job = json.loads(cluster.jobs("show", job_id))
    assert job["crashes"] == 2 and job["runs"] == 2, job  # delivered 1 + delivery_limit times
    assert 'dicomnode_jobs_dead_lettered_total{pipeline="plumbing:create"} 1' in dispatcher.metrics()
    assert "re-armed (queued)" in cluster.jobs("retry", job_id)
    wait_for(lambda: json.loads(cluster.jobs("show", job_id))["runs"] == 4, timeout=60)  # published anew


def test_a_killed_receiver_and_a_broker_outage_lose_nothing(make_cluster: Any, rabbit: RabbitServer,
                                                            tmp_path: Path) -> None:
    """``kill -9`` of a receiver mid-association, then the sender sends the series again to
    the other receiver; RabbitMQ stopped while series arrive: they are acknowledged, and
    published and run once it is back."""
    cluster = make_cluster()
    r1, r2 = cluster.role("receiver"), cluster.role("receiver")
    cluster.role("worker")
    cluster.role("dispatcher")
    cut = mr_series(tmp_path / "cut", 6, seed="cut")
    assoc = store_association(r1.port, _contexts(cut))
    assert [int(assoc.send_c_store(p).Status) for p in cut[:3]] == [0, 0, 0]
    r1.kill9()
    assoc.abort()
    assert _send(r2.port, cut) == [0] * 6
    wait_for(lambda: cluster.results().get(_series_uid(cut)), timeout=60)
    rabbit.stop()
    try:
        during = [mr_series(tmp_path / f"o{i}", 3, seed=f"outage{i}") for i in range(2)]
        for series in during:
            assert _send(r2.port, series) == [0, 0, 0]  # the spool and the database still take them
        wait_for(lambda: r2.health()[1]["status"] == "degraded" and "broker" in r2.health()[1]["broker"], timeout=30)
        assert r2.health()[0] == 200  # still accepting: a probe must not take it out
    finally:
        rabbit.start()
    wait_for(lambda: all(_series_uid(s) in cluster.results() for s in during), timeout=120)
    results = cluster.results()
    assert results[_series_uid(cut)]["findings"]["instances"] == 6
    assert [results[_series_uid(s)]["findings"]["instances"] for s in during] == [3, 3]
    assert cluster.jobs("list").count(" done ") == 3


def test_database_down_answers_out_of_resources_so_the_sender_retries(
        tmp_path: Path, rabbit: RabbitServer, plumbing_bundle: Any) -> None:
    """The receiver cannot record the series: 0xA700 (never a silent success); after the
    database is back the same instances are accepted and processed."""
    with postgres_server() as own_pg:
        bundles = {"plumbing": plumbing_bundle(), "plumbing-hold": plumbing_bundle()}
        dests = {"outbox": {"type": "folder", "path": str(tmp_path / "outbox")}}
        cluster = Cluster(tmp_path, _cluster_config(tmp_path, own_pg, rabbit, bundles, dests))
        try:
            receiver = cluster.role("receiver")
            cluster.role("worker")
            cluster.role("dispatcher")
            series = mr_series(tmp_path / "db", 2, seed="db")
            stop_server(own_pg)
            try:
                assert _send(receiver.port, series) == [0xA700, 0xA700]
                assert receiver.health()[0] == 503
            finally:
                start_server(own_pg)
            assert _send(receiver.port, series) == [0, 0]
            wait_for(lambda: cluster.results().get(_series_uid(series)), timeout=60)
            assert "cannot record the series in the job database" in receiver.tail(20000)
        finally:
            cluster.stop()


def test_unreachable_broker_or_database_at_start_exits_2_naming_it_without_the_password(
        tmp_path: Path, pg: str, rabbit: RabbitServer, plumbing_bundle: Any) -> None:
    base = node_config(tmp_path, plumbing_bundle())
    for role, broker, database, named in (
            ("receiver", "amqp://dn:s3cret@127.0.0.1:1//", fresh_database(pg), "127.0.0.1:1"),
            ("worker", rabbit.url, f"host={tmp_path} user=dn password=s3cret dbname=x", "dbname=x")):
        config = scale_config(base, broker_url=broker, database_url=database)
        for argv in (["serve", "--config", str(config), "--role", role], ["check-config", str(config)]):
            done = subprocess.run([sys.executable, "-m", "dicomnode", *argv], capture_output=True, text=True,
                                  timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{REPO}"})
            assert done.returncode == 2, done.stderr[-2000:]
            assert named in done.stderr and "s3cret" not in done.stderr + done.stdout, done.stderr[-2000:]


def test_roles_need_the_celery_executor(tmp_path: Path, plumbing_bundle: Any) -> None:
    config = node_config(tmp_path, plumbing_bundle())
    done = subprocess.run([sys.executable, "-m", "dicomnode", "serve", "--config", str(config), "--role", "worker"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and "executor.kind: celery" in done.stderr
    data = yaml.safe_load(config.read_text())
    data["executor"] = {"kind": "celery", "broker_url": "redis://localhost", "database_url": "dbname=x"}
    config.write_text(yaml.safe_dump(data))
    checked = subprocess.run([sys.executable, "-m", "dicomnode", "check-config", str(config)],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
    assert checked.returncode != 0 and "executor.broker_url" in checked.stdout + checked.stderr


def test_a_series_goes_receiver_queue_worker_dispatcher(make_cluster: Any, tmp_path: Path) -> None:
    """``--role all``: receiver and dispatcher in one process, its worker a child process;
    ``/metrics`` shows the queues (depth per queue, the dead-letter queue) and the job states."""
    cluster = make_cluster()
    node = cluster.role("all")
    series = mr_series(tmp_path / "one", 3, seed="one")
    assert _send(node.port, series) == [0, 0, 0]
    result = wait_for(lambda: cluster.results().get(_series_uid(series)), timeout=60)
    assert result["findings"]["instances"] == 3
    metrics = node.metrics()
    queue = yaml.safe_load(cluster.config.read_text())["executor"]["queues"]["plumbing:create"]
    assert f'dicomnode_queue_messages{{queue="{queue}"}} 0' in metrics, metrics
    assert 'dicomnode_queue_messages{queue="dead' in metrics and 'dicomnode_jobs{state="done"} 1' in metrics
    status, health = node.health()
    assert status == 200 and health["broker"] == health["database"] == "ok", health
