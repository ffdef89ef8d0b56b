"""Series state shared by every receiver: which series are assembling, and who turns one into a job.

One row per assembling series in ``dicomnode_series`` (first and last instance time, by the
database's clock so that machines with skewed clocks agree). A receiver records every
instance it acknowledges (:meth:`SeriesLedger.seen`); any receiver may then claim the
series that are complete (quiet for ``assembly.quiet_s``, or older than
``assembly.max_wait_s``) with ``SELECT … FOR UPDATE SKIP LOCKED`` (:meth:`claim_due`):
one receiver holds a series' row while it turns the series into a job (the others skip
it), and the row is deleted in the same transaction. Exactly one job per series does not
rest on the row lock alone: the series folder moves into the job under the spool's series
lock, and a claim that finds the folder gone does nothing. The job's publication is the job store's outbox
(:class:`~dicomnode.jobstore_pg.PostgresJobStore`), so a claim that crashes half-way is
claimed again (the instances are still in ``incoming/``) or finds the series already
turned into a job (its folder moved) and only drops the row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dicomnode.errors import DicomNodeError
from dicomnode.jobstore_pg import PostgresJobStore

__all__ = ["SeriesLedger"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dicomnode_series (
    series_uid text PRIMARY KEY,
    first_seen double precision NOT NULL,
    last_seen  double precision NOT NULL,
    instances  integer NOT NULL
);
"""
_NOW = "extract(epoch from clock_timestamp())"


class SeriesLedger:
    """The ``dicomnode_series`` table, through the job store's connections."""

    def __init__(self, store: PostgresJobStore) -> None:
        self.store = store
        with store.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (0x73657269,))
            conn.execute(_SCHEMA)

    def seen(self, series_uid: str) -> None:
        """Record one acknowledged instance of ``series_uid`` (raises
        :class:`~dicomnode.errors.SpoolError` when the database cannot be reached)."""
        with self.store.transaction() as conn:
            # no wait for the database's WAL flush: a record lost in a database crash is
            # re-made from the spool (the instance is durable there; adopt() finds its folder)
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute(f"INSERT INTO dicomnode_series VALUES (%s, {_NOW}, {_NOW}, 1) ON CONFLICT (series_uid) "
                         f"DO UPDATE SET last_seen = {_NOW}, instances = dicomnode_series.instances + 1",
                         (series_uid,))

    def adopt(self, series_uid: str) -> None:
        """Record a series found in ``incoming/`` if the ledger does not know it."""
        with self.store.transaction() as conn:
            conn.execute(f"INSERT INTO dicomnode_series VALUES (%s, {_NOW}, {_NOW}, 0) ON CONFLICT DO NOTHING",
                         (series_uid,))

    def claim_due(self, quiet_s: float, max_wait_s: float, complete: Callable[[str, str], object],
                  limit: int = 20) -> list[str]:
        """Claim complete series and call ``complete(series_uid, reason)`` for each while its
        row is locked; the rows of those that returned are deleted. Returns their UIDs."""
        with self.store.transaction() as conn:
            rows = conn.execute(
                f"SELECT series_uid, last_seen < {_NOW} - %s FROM dicomnode_series WHERE last_seen < {_NOW} - %s "
                f"OR first_seen < {_NOW} - %s ORDER BY first_seen LIMIT %s FOR UPDATE SKIP LOCKED",
                (quiet_s, quiet_s, max_wait_s, limit)).fetchall()
            claimed = []
            for series_uid, quiet in rows:
                try:
                    complete(series_uid, f"quiet for {quiet_s:g} s" if quiet else f"max_wait_s {max_wait_s:g} reached")
                except (DicomNodeError, OSError) as exc:  # that series only; claimed again next round
                    log.error("series %s: could not queue a job: %s", series_uid, exc)
                    continue
                conn.execute("DELETE FROM dicomnode_series WHERE series_uid = %s", (series_uid,))
                claimed.append(series_uid)
        return claimed

    def pending(self) -> int:
        with self.store.transaction() as conn:
            row = conn.execute("SELECT count(*) FROM dicomnode_series").fetchone()
        return int(row[0]) if row else 0
