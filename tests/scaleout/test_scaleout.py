"""Scale-out mode (executor.kind: celery) with real processes: 2 receivers, workers and a
dispatcher as separate ``dicomnode serve --role`` processes, a private RabbitMQ and
PostgreSQL, fault injection by ``kill -9`` and by stopping the broker or the database."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import Role, scale_config
from conftest import mr_series, node_config
from netutil import store_association, wait_for
from orthanc import netns_skip
from pgserver import fresh_database, postgres_server
from rabbitserver import RabbitServer, rabbit_server

pytestmark = [netns_skip(), pytest.mark.timeout(600)]
_names = itertools.count()


@pytest.fixture(scope="module")
def pg() -> Iterator[str]:
    with postgres_server() as conninfo:
        yield conninfo


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitServer]:
    with rabbit_server() as server:
        yield server


class Cluster:
    def __init__(self, tmp_path: Path, config: Path) -> None:
        self.tmp_path, self.config = tmp_path, config
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.roles: list[Role] = []
        self.outbox = tmp_path / "outbox"

    def role(self, role: str, *extra: str, wait: bool = True) -> Role:
        proc = Role(self.config, role, f"{role}-{len(self.roles)}", self.logs, *extra)
        self.roles.append(proc)
        return proc.start(wait)

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.outbox.glob("*/*/*/result.json"))]

    def dump(self) -> str:
        return "\n".join(f"== {r.name}\n{r.tail(3000)}" for r in self.roles)

    def stop(self) -> None:
        for role in self.roles:
            role.stop()


@pytest.fixture
def cluster(tmp_path: Path, pg: str, rabbit: RabbitServer, plumbing_bundle: Any,
            request: pytest.FixtureRequest) -> Iterator[Cluster]:
    extra = getattr(request, "param", {})
    bundle = plumbing_bundle(**extra.get("bundle", {}))
    n = next(_names)
    config = scale_config(node_config(tmp_path, bundle), broker_url=rabbit.url, database_url=fresh_database(pg),
                          queues={"plumbing:create": f"mri{n}"}, dead_letter_queue=f"dead{n}",
                          **extra.get("executor", {}))
    c = Cluster(tmp_path, config)
    try:
        yield c
    except BaseException:
        print(c.dump())
        raise
    finally:
        c.stop()


def _send(port: int, paths: list[Path]) -> list[int]:
    """C-STORE ``paths`` over one association; the status of each."""
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
    assoc = store_association(port, [(MRImageStorage, ExplicitVRLittleEndian)])
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(p).Status) for p in paths]
    finally:
        assoc.release()


def test_a_series_goes_receiver_queue_worker_dispatcher(cluster: Cluster, tmp_path: Path) -> None:
    receiver = cluster.role("receiver")
    cluster.role("worker")
    cluster.role("dispatcher")
    assert _send(receiver.port, mr_series(tmp_path / "s1", 3, seed="a")) == [0, 0, 0]
    results = wait_for(cluster.results, timeout=90)
    assert len(results) == 1 and results[0]["findings"]["instances"] == 3, cluster.dump()
