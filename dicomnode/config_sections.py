"""Typed, frozen sections of :class:`dicomnode.config.Config` and their validation."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dicomnode.errors import ConfigError, RoutingError
from dicomnode.routing import Rule, compile_rule

__all__ = [
    "AllowEntry", "AssemblyConfig", "Destination", "DispatchConfig", "HttpConfig",
    "LogConfig", "ModelRef", "NodeConfig", "Route", "Section", "SpoolConfig",
    "TlsConfig", "WorkerConfig",
]

T = TypeVar("T")
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default character repertoire, no '\'


class Section:
    """Reads one mapping of the YAML, naming the dotted key in every error."""

    def __init__(self, data: Any, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(path, data, "must be a mapping of keys")
        self.data, self.path = data, path
        self.used: set[str] = set()

    def get(self, key: str, kind: type[T], default: T | None = None, *, fix: str = "") -> T:
        """Value of ``key`` coerced to ``kind`` (bool/int/float/str/list), else ``default``."""
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if default is None:
                raise ConfigError(f"{self.path}.{key}", None, fix or f"required; give a {kind.__name__}")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{self.path}.{key}", value, fix or f"must be a {kind.__name__}")
        return value

    def sub(self, key: str) -> Section:
        self.used.add(key)
        return Section(self.data.get(key), f"{self.path}.{key}")

    def finish(self) -> None:
        """Reject keys nobody read (typos), suggesting the closest known key."""
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            hint = difflib.get_close_matches(str(unknown[0]), sorted(self.used), n=1)
            fix = f"did you mean '{hint[0]}'?" if hint else f"known keys: {', '.join(sorted(self.used))}"
            raise ConfigError(f"{self.path}.{unknown[0]}", self.data[unknown[0]], f"unknown key; {fix}")


def _positive(sec: Section, key: str, kind: type[T], default: T) -> T:
    value = sec.get(key, kind, default)
    if value <= 0:  # type: ignore[operator]
        raise ConfigError(f"{sec.path}.{key}", value, "must be greater than 0")
    return value


def _port(sec: Section, key: str, default: int, *, allow_zero: bool = False) -> int:
    port = sec.get(key, int, default)
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ConfigError(f"{sec.path}.{key}", port, "use a TCP port 1–65535" + (" (0 disables)" if allow_zero else ""))
    return port


def _ae_title(sec: Section, key: str, default: str | None = None) -> str:
    title = sec.get(key, str, default)
    if not _AE_RE.match(title) or not title.strip():
        raise ConfigError(f"{sec.path}.{key}", title, "AE titles are 1–16 printable ASCII characters, no backslash")
    return title.strip()


def _optional_path(sec: Section, key: str) -> Path | None:
    value = sec.get(key, str, "")
    return Path(value) if value else None


@dataclass(frozen=True)
class TlsConfig:
    """DICOM TLS settings (listener or sender)."""

    enabled: bool = False
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    require_client_cert: bool = True

    @classmethod
    def parse(cls, sec: Section, *, server: bool) -> TlsConfig:
        tls = cls(enabled=sec.get("enabled", bool, False), cert=_optional_path(sec, "cert"),
                  key=_optional_path(sec, "key"), ca=_optional_path(sec, "ca"),
                  require_client_cert=sec.get("require_client_cert", bool, True))
        sec.finish()
        needed = ("cert", "key") if server else ("ca",)
        for name in needed if tls.enabled else ():
            path = getattr(tls, name)
            if path is None or not path.is_file():
                raise ConfigError(f"{sec.path}.{name}", str(path) if path else None,
                                  "TLS is enabled: give the path of an existing PEM file")
        if tls.enabled and server and tls.require_client_cert and tls.ca is None:
            raise ConfigError(f"{sec.path}.ca", None, "require_client_cert needs a CA bundle path")
        return tls


@dataclass(frozen=True)
class AllowEntry:
    """One allowlist entry: a calling AE title (``*`` = any) from a network."""

    ae_title: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    def permits(self, ae_title: str, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return (self.ae_title in ("*", ae_title.strip())) and ip in self.network

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.network}"


@dataclass(frozen=True)
class NodeConfig:
    """The DICOM listener."""

    ae_title: str
    host: str
    port: int
    allow: tuple[AllowEntry, ...]
    tls: TlsConfig
    max_associations: int
    #: event-driven pynetdicom reactors, 128 KiB PDUs, fast C-STORE-RSP (``net/tuning.py``)
    pynetdicom_tuning: bool = True
    #: processes listening on the port (SO_REUSEPORT); 1 = the node alone (receivers.py)
    receivers: int = 1

    @classmethod
    def parse(cls, sec: Section) -> NodeConfig:
        raw_allow = sec.get("allow", list, [])
        allow = tuple(_allow_entry(item, f"{sec.path}.allow[{i}]") for i, item in enumerate(raw_allow))
        node = cls(ae_title=_ae_title(sec, "ae_title", "DICOMNODE"), host=sec.get("host", str, "127.0.0.1"),
                   port=_port(sec, "port", 11112, allow_zero=True), allow=allow,
                   tls=TlsConfig.parse(sec.sub("tls"), server=True),
                   max_associations=_positive(sec, "max_associations", int, 16),
                   pynetdicom_tuning=sec.get("pynetdicom_tuning", bool, True),
                   receivers=_positive(sec, "receivers", int, 1))
        sec.finish()
        return node


def _allow_entry(item: Any, path: str) -> AllowEntry:
    sec = Section(item, path)
    ae = sec.get("ae_title", str, "*")
    raw_net = sec.get("network", str, fix="give a CIDR such as 10.0.0.0/24 (127.0.0.1/32 for one host)")
    sec.finish()
    try:
        net = ipaddress.ip_network(raw_net, strict=False)
    except ValueError as exc:
        raise ConfigError(f"{path}.network", raw_net, "use an address or CIDR such as 10.0.0.0/24") from exc
    return AllowEntry(ae_title=ae.strip(), network=net)


@dataclass(frozen=True)
class SpoolConfig:
    path: Path
    min_free_mb: int
    retention_days: float
    #: ``syncfs`` (group commit of received instances) or ``fsync`` (per file); see spool.py
    sync: str = "syncfs"

    @classmethod
    def parse(cls, sec: Section) -> SpoolConfig:
        sync = sec.get("sync", str, "syncfs")
        if sync not in ("syncfs", "fsync"):
            raise ConfigError(f"{sec.path}.sync", sync, "use syncfs (group commit) or fsync (per file, Linux < 5.8)")
        spool = cls(path=Path(sec.get("path", str, "./var/spool")), min_free_mb=sec.get("min_free_mb", int, 512),
                    retention_days=_positive(sec, "retention_days", float, 7.0), sync=sync)
        sec.finish()
        return spool


@dataclass(frozen=True)
class AssemblyConfig:
    quiet_s: float
    max_wait_s: float

    @classmethod
    def parse(cls, sec: Section) -> AssemblyConfig:
        asm = cls(quiet_s=_positive(sec, "quiet_s", float, 10.0), max_wait_s=_positive(sec, "max_wait_s", float, 900.0))
        sec.finish()
        if asm.max_wait_s < asm.quiet_s:
            raise ConfigError(f"{sec.path}.max_wait_s", asm.max_wait_s, "must be ≥ quiet_s")
        return asm


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int
    job_timeout_s: float
    device: str
    onnx_providers: tuple[str, ...]
    max_crashes: int = 3

    @classmethod
    def parse(cls, sec: Section) -> WorkerConfig:
        device = sec.get("device", str, "auto")
        if device not in ("auto", "cpu", "cuda") and not re.match(r"^cuda:\d+$", device):
            raise ConfigError(f"{sec.path}.device", device, "use auto, cpu, cuda or cuda:N")
        worker = cls(concurrency=_positive(sec, "concurrency", int, 1),
                     job_timeout_s=_positive(sec, "job_timeout_s", float, 1800.0), device=device,
                     onnx_providers=tuple(str(p) for p in sec.get("onnx_providers", list, ["CPUExecutionProvider"])),
                     max_crashes=_positive(sec, "max_crashes", int, 3))
        sec.finish()
        return worker


@dataclass(frozen=True)
class ModelRef:
    path: Path

    @classmethod
    def parse(cls, sec: Section) -> ModelRef:
        ref = cls(path=Path(sec.get("path", str, fix="give the bundle folder holding model.yaml")))
        sec.finish()
        return ref


@dataclass(frozen=True)
class Destination:
    """Where outputs go: ``folder`` (path), ``dimse`` (AE/host/port/TLS) or ``stow`` (url)."""

    name: str
    type: str
    path: Path | None = None
    ae_title: str = ""
    host: str = ""
    port: int = 0
    calling_ae_title: str = "DICOMNODE"
    tls: TlsConfig = TlsConfig()
    url: str = ""
    timeout_s: float = 30.0

    @classmethod
    def parse(cls, name: str, sec: Section) -> Destination:
        kind = sec.get("type", str, fix="one of folder, dimse, stow")
        if kind == "folder":
            dest = cls(name, kind, path=Path(sec.get("path", str, fix="give the output folder")))
        elif kind == "dimse":
            dest = cls(name, kind, ae_title=_ae_title(sec, "ae_title"),
                       host=sec.get("host", str, fix="give the PACS host"),
                       port=_port(sec, "port", 104), calling_ae_title=_ae_title(sec, "calling_ae_title", "DICOMNODE"),
                       tls=TlsConfig.parse(sec.sub("tls"), server=False))
        elif kind == "stow":
            url = sec.get("url", str, fix="give the STOW-RS studies URL, e.g. http://pacs:8042/dicom-web/studies")
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{sec.path}.url", url, "must start with http:// or https://")
            dest = cls(name, kind, url=url)
        else:
            raise ConfigError(f"{sec.path}.type", kind, "use folder, dimse or stow")
        dest = cls(**{**dest.__dict__, "timeout_s": _positive(sec, "timeout_s", float, 30.0)})
        sec.finish()
        return dest


@dataclass(frozen=True)
class DispatchConfig:
    max_attempts: int
    backoff_s: float
    backoff_max_s: float

    @classmethod
    def parse(cls, sec: Section) -> DispatchConfig:
        disp = cls(max_attempts=_positive(sec, "max_attempts", int, 6),
                   backoff_s=_positive(sec, "backoff_s", float, 2.0),
                   backoff_max_s=_positive(sec, "backoff_max_s", float, 300.0))
        sec.finish()
        return disp


@dataclass(frozen=True)
class Route:
    """A routing rule: match → pipeline + model + destinations."""

    name: str
    pipeline: str
    model: str
    destinations: tuple[str, ...]
    rule: Rule
    settings: Mapping[str, Any] = field(default_factory=dict)
    on_refused: str = "report"  # a refused series: "report" (a "not analysed" SR) or "silent"

    @classmethod
    def parse(cls, sec: Section, models: Mapping[str, ModelRef], dests: Mapping[str, Destination]) -> Route:
        name = sec.get("name", str, fix="give each route a unique name")
        model = sec.get("model", str, fix="name a model id from the 'models' section")
        if model not in models:
            raise ConfigError(f"{sec.path}.model", model, f"not in 'models'; known: {', '.join(sorted(models))}")
        targets = tuple(str(d) for d in sec.get("destinations", list, fix="list destination names"))
        for target in targets:
            if target not in dests:
                raise ConfigError(f"{sec.path}.destinations", target,
                                  f"not in 'destinations'; known: {', '.join(sorted(dests))}")
        try:
            example = "give a match rule, e.g. {all: [{tag: Modality, equals: MR}]}"
            rule = compile_rule(sec.get("match", dict, fix=example))
        except RoutingError as exc:
            raise ConfigError(f"{sec.path}.match", sec.data.get("match"), str(exc)) from exc
        on_refused = sec.get("on_refused", str, "report")
        if on_refused not in ("report", "silent"):
            raise ConfigError(f"{sec.path}.on_refused", on_refused, "use report (a 'not analysed' SR) or silent")
        route = cls(name=name, pipeline=sec.get("pipeline", str, fix="name a pipeline (mri-lln, wsi-two-stage)"),
                    model=model, destinations=targets, rule=rule, settings=sec.get("settings", dict, {}),
                    on_refused=on_refused)
        sec.finish()
        return route


@dataclass(frozen=True)
class HttpConfig:
    host: str
    port: int

    @classmethod
    def parse(cls, sec: Section) -> HttpConfig:
        http = cls(host=sec.get("host", str, "127.0.0.1"), port=_port(sec, "port", 8080, allow_zero=True))
        sec.finish()
        return http


@dataclass(frozen=True)
class LogConfig:
    format: str
    level: str

    @classmethod
    def parse(cls, sec: Section) -> LogConfig:
        fmt, level = sec.get("format", str, "console"), sec.get("level", str, "INFO").upper()
        if fmt not in ("console", "json"):
            raise ConfigError(f"{sec.path}.format", fmt, "use console or json")
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"{sec.path}.level", level, "use DEBUG, INFO, WARNING or ERROR")
        sec.finish()
        return cls(fmt, level)

