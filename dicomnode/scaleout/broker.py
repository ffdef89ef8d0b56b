"""The Celery application of the scale-out mode: queues, publishing, queue depths, dead letters.

Only job ids travel through RabbitMQ; instances and outputs stay on the shared spool.
Every pipeline queue is a *quorum* queue (replicated, durable) declared with
``x-delivery-limit`` (``executor.delivery_limit``) and dead-lettering into
``executor.dead_letter_queue``: a job whose every delivery ends with its worker dead (or
with a requeue after a crashed run) is moved there by RabbitMQ instead of looping. Tasks
are acknowledged late (after the run is recorded) and rejected back to the queue when the
worker is lost, so a ``kill -9`` of a worker makes RabbitMQ deliver the job to another one.
Celery and kombu are imported here and in :mod:`dicomnode.scaleout.worker_role` only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from celery import Celery
from kombu import Connection, Exchange, Queue

from dicomnode.config import Config
from dicomnode.errors import DicomNodeError

__all__ = ["RUN_JOB", "Broker", "make_app", "redact_url", "used_queues"]

log = logging.getLogger(__name__)

#: Name of the one task: ``run_job(job_id)``.
RUN_JOB = "dicomnode.run_job"
#: topic, not direct: Celery's native delayed delivery (quorum queues) supports only topic exchanges
_EXCHANGE = Exchange("dicomnode", type="topic", durable=True)


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/`` → ``amqp://user:***@host/`` for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def used_queues(config: Config) -> list[str]:
    """The queues of the pipelines the routes use (what this deployment declares and consumes)."""
    return sorted({config.executor.queue_of(route.pipeline) for route in config.routes})


def _queues(config: Config) -> list[Queue]:
    ex = config.executor
    # at-least-once dead-lettering (RabbitMQ >= 3.10) needs reject-publish overflow: a dead
    # letter is never dropped on the way to the dead-letter queue
    arguments = {"x-queue-type": "quorum", "x-delivery-limit": ex.delivery_limit,
                 "x-dead-letter-exchange": "", "x-dead-letter-routing-key": ex.dead_letter_queue,
                 "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    return [Queue(name, _EXCHANGE, routing_key=name, durable=True, queue_arguments=arguments)
            for name in used_queues(config)]


def _dead_letter_queue(config: Config) -> Queue:
    return Queue(config.executor.dead_letter_queue, durable=True, queue_arguments={"x-queue-type": "quorum"})


def make_app(config: Config) -> Celery:
    """The Celery app: late acks, prefetch 1, JSON only, no result backend, quorum queues."""
    ex = config.executor
    default = (used_queues(config) or [ex.dead_letter_queue])[0]  # Celery needs one; every publish names its queue
    app = Celery("dicomnode", broker=ex.broker_url, set_as_current=False)
    app.conf.update(
        task_queues=_queues(config), task_create_missing_queues=False,
        task_default_queue=default, task_default_exchange=_EXCHANGE.name,
        task_default_exchange_type=_EXCHANGE.type, task_default_routing_key=default,
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_serializer="json", accept_content=["json"], task_ignore_result=True, result_backend=None,
        broker_connection_timeout=ex.publish_timeout_s, broker_connection_retry_on_startup=True,
        broker_transport_options={"confirm_publish": True, "max_retries": 0},
        # the solo pool blocks while a job runs: AMQP heartbeats could not be answered, so
        # RabbitMQ would close the connection mid-job and redeliver; TCP notices dead peers
        broker_heartbeat=0,
        worker_hijack_root_logger=False, worker_redirect_stdouts=False,
        worker_enable_remote_control=False, worker_send_task_events=False,
    )
    return app


class Broker:
    """Publishing and inspection from receivers and dispatchers (not the worker loop)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.app = make_app(config)
        self.url = redact_url(config.executor.broker_url)

    def declare(self) -> None:
        """Declare the pipeline queues and the dead-letter queue (idempotent)."""
        with self._connection() as conn:
            for queue in [*_queues(self.config), _dead_letter_queue(self.config)]:
                try:
                    queue(conn.default_channel).declare()
                except Exception as exc:  # noqa: BLE001 - e.g. PRECONDITION_FAILED: declared with other arguments
                    raise DicomNodeError(f"broker {self.url}: cannot declare queue {queue.name}: {exc} (a queue "
                                         "declared earlier with other executor settings must be deleted first, "
                                         "e.g. rabbitmqctl delete_queue)") from exc

    def publish(self, job_id: str, queue: str) -> None:
        """Send ``run_job(job_id)`` to ``queue`` and wait for the broker's confirm."""
        self.app.send_task(RUN_JOB, args=[job_id], queue=queue, retry=False)

    def depths(self) -> dict[str, int]:
        """Messages waiting per queue, the dead-letter queue included."""
        out: dict[str, int] = {}
        with self._connection() as conn:
            channel = conn.default_channel
            for queue in [*_queues(self.config), _dead_letter_queue(self.config)]:
                out[queue.name] = int(queue(channel).queue_declare(passive=True).message_count)
        return out

    def ping(self) -> str:
        """"" when the broker answers, else why not (URL without its password)."""
        try:
            with self._connection():
                pass
        except DicomNodeError as exc:
            return str(exc)
        return ""

    def drain_dead_letters(self, handle: Callable[[str, int], None], limit: int = 50) -> int:
        """Take messages from the dead-letter queue: ``handle(job_id, deliveries)``, then ack."""
        taken = 0
        with self._connection() as conn:
            bound = _dead_letter_queue(self.config)(conn.default_channel)
            bound.declare()
            while taken < limit and (message := bound.get(no_ack=False)) is not None:
                job_id, deliveries = _dead_letter(message)
                if job_id:
                    handle(job_id, deliveries)
                message.ack()
                taken += 1
        return taken

    def _connection(self) -> Connection:
        """A connected connection (one attempt, ``executor.publish_timeout_s``), or
        :class:`~dicomnode.errors.DicomNodeError` naming the broker without its password."""
        conn = self.app.connection_for_write()
        try:
            conn.ensure_connection(max_retries=1, timeout=self.config.executor.publish_timeout_s)
        except Exception as exc:  # noqa: BLE001 - kombu and amqp raise many kinds
            conn.release()
            raise DicomNodeError(f"broker {self.url}: cannot connect: {exc}") from exc
        return conn


def _dead_letter(message: Any) -> tuple[str, int]:
    """Job id and delivery count of a dead-lettered ``run_job`` message."""
    try:
        body = message.body if isinstance(message.body, (list, tuple)) else json.loads(message.body)
        job_id = str(body[0][0])
    except (ValueError, IndexError, TypeError, KeyError):
        log.error("dead-letter queue: a message that is not a dicomnode job, dropped: %r", message.body[:200])
        return "", 0
    headers = message.headers or {}
    deaths = headers.get("x-death") or [{}]
    count = int(headers.get("x-delivery-count") or deaths[0].get("count") or 0)
    return job_id, count
