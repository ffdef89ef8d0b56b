"""Series → job: route a complete series and publish its job (or put it aside as unmatched).

Shared by the embedded node (its assembler decides when a series is complete) and the
scale-out receivers (the series ledger in PostgreSQL decides). Runs under the series'
spool lock, so an instance arriving meanwhile lands either in the job or in a new series
folder, never in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dicomnode import jobs
from dicomnode.config import Config, Route
from dicomnode.inference.manifest import load_bundle
from dicomnode.jobs import Job
from dicomnode.jobstore import JobStore
from dicomnode.log import bound
from dicomnode.metrics import Metrics
from dicomnode.routing import first_match
from dicomnode.spool import Spool

__all__ = ["Intake"]

log = logging.getLogger(__name__)


class Intake:
    """Turns complete series of ``incoming/`` into jobs.

    ``problems`` maps route names to why the route is disabled ("" when usable); a job of
    a disabled route is created ``failed`` with that reason.
    """

    def __init__(self, config: Config, spool: Spool, store: JobStore, metrics: Metrics) -> None:
        self.config, self.spool, self.store, self.metrics = config, spool, store, metrics
        self.problems: dict[str, str] = {}

    def complete(self, series_uid: str, reason: str, locked: Callable[[], None] = lambda: None) -> Job | None:
        """Route the series and create its job; ``None`` when there is nothing to do (the
        folder is gone: another process took it) or no route matched. ``locked`` runs first,
        under the series lock."""
        with self.spool.series_lock(series_uid):
            locked()
            folder = self.spool.incoming_dir(series_uid)
            if not folder.is_dir():
                return None
            headers = self.spool.series_record(folder)["headers"]
            route, trace = first_match(self.config.routes, headers)
            with bound(study_uid=headers.get("StudyInstanceUID", ""), series_uid=series_uid):
                self.metrics.inc("dicomnode_series_completed_total")
                if route is None:
                    self.spool.move_unmatched(series_uid)
                    self.metrics.inc("dicomnode_series_unmatched_total")
                    log.info("series %s complete (%s) but no route matched: %s", series_uid, reason,
                             "; ".join(f"{n}: {why}" for n, _, why in trace))
                    return None
                job = self.new_job(self.spool.new_job_id(series_uid), route, headers,
                                   len(list(folder.glob("*.dcm"))))
                self.store.create(job, series_uid)
                log.info("series %s complete (%s) → route %s, job %s", series_uid, reason, route.name, job.job_id)
        return job

    def new_job(self, job_id: str, route: Route, headers: dict[str, Any], instances: int) -> Job:
        model = self.config.models[route.model]
        problem = self.problems.get(route.name, "")
        version = "" if problem else load_bundle(model.path, verify=False).version
        return jobs.new_job(job_id, route=route.name, pipeline=route.pipeline, model=route.model,
                            model_path=str(Path(model.path).resolve()), model_version=version,
                            study_uid=headers.get("StudyInstanceUID", ""),
                            series_uid=headers.get("SeriesInstanceUID", ""), instances=instances,
                            destinations=list(route.destinations), created=time.time(), problem=problem)

    def job_for(self, job_id: str, headers: dict[str, Any], instances: int) -> Job | None:
        """The job a half-made job found at start should be (``None``: no route matches)."""
        route, _ = first_match(self.config.routes, headers)
        return None if route is None else self.new_job(job_id, route, headers, instances)
