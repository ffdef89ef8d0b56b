"""The ``executor:`` section of the config: embedded (one process) or the scale-out mode."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from dicomnode.config_sections import Section, _positive
from dicomnode.errors import ConfigError

__all__ = ["DEFAULT_QUEUES", "ExecutorConfig"]


#: Queue of each pipeline unless ``executor.queues`` says otherwise.
DEFAULT_QUEUES = {"mri-lln": "mri", "wsi-two-stage": "wsi"}
_QUEUE_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where jobs run: ``embedded`` (this process, the default) or ``celery`` (scale-out:
    RabbitMQ queues, PostgreSQL job ledger, a shared spool; docs/scale-out.md)."""

    kind: str = "embedded"
    broker_url: str = ""
    database_url: str = ""
    queues: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_QUEUES))
    dead_letter_queue: str = "dicomnode.dead"
    delivery_limit: int = 3
    claim_interval_s: float = 0.25
    publish_timeout_s: float = 5.0

    @property
    def celery(self) -> bool:
        return self.kind == "celery"

    def queue_of(self, pipeline: str) -> str:
        """The queue a job of ``pipeline`` is published to."""
        return self.queues.get(pipeline, pipeline)

    @classmethod
    def parse(cls, sec: Section) -> ExecutorConfig:
        kind = sec.get("kind", str, "embedded")
        if kind not in ("embedded", "celery"):
            raise ConfigError(f"{sec.path}.kind", kind, "use embedded (one process) or celery (scale-out)")
        queues = {**DEFAULT_QUEUES, **{str(k): str(v) for k, v in sec.get("queues", dict, {}).items()}}
        for name in [*queues.values(), dlq := sec.get("dead_letter_queue", str, "dicomnode.dead")]:
            if not _QUEUE_RE.match(name):
                raise ConfigError(f"{sec.path}.queues", name, "queue names: letters, digits, '.', '_', '-'")
        executor = cls(kind=kind, broker_url=sec.get("broker_url", str, ""),
                       database_url=sec.get("database_url", str, ""), queues=queues, dead_letter_queue=dlq,
                       delivery_limit=_positive(sec, "delivery_limit", int, 3),
                       claim_interval_s=_positive(sec, "claim_interval_s", float, 0.25),
                       publish_timeout_s=_positive(sec, "publish_timeout_s", float, 5.0))
        sec.finish()
        for key in ("broker_url", "database_url"):
            if kind == "celery" and not getattr(executor, key):
                raise ConfigError(f"{sec.path}.{key}", None, "required when executor.kind is celery")
        if kind == "celery" and not executor.broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
            raise ConfigError(f"{sec.path}.broker_url", "<url>", "use an amqp:// or amqps:// URL (RabbitMQ)")
        return executor
