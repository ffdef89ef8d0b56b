"""The one typed, frozen configuration of a node.

Precedence: embedded defaults (``dicomnode/defaults/dicomnode.yaml``) < the YAML file <
``DICOMNODE_<SECTION>__<KEY>`` environment variables < CLI overrides. Mappings merge key
by key; lists (``routes``, ``allow``) are replaced whole. Relative paths are relative to
the working directory. Every error names the key, the bad value and the fix.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dicomnode.config_executor import ExecutorConfig
from dicomnode.config_sections import (
    AllowEntry,
    AssemblyConfig,
    Destination,
    DispatchConfig,
    HttpConfig,
    LogConfig,
    ModelRef,
    NodeConfig,
    Route,
    Section,
    SpoolConfig,
    TlsConfig,
    WorkerConfig,
)
from dicomnode.errors import ConfigError

__all__ = [
    "AllowEntry",
    "Config",
    "Destination",
    "Route",
    "TlsConfig",
    "default_config_text",
    "load_config",
]

_SECTIONS = (
    "node", "spool", "assembly", "worker", "models", "destinations", "dispatch",
    "routes", "http", "log", "uid_root", "executor",
)


@dataclass(frozen=True)
class Config:
    """A validated node configuration (see the module docstring for precedence)."""

    node: NodeConfig
    spool: SpoolConfig
    assembly: AssemblyConfig
    worker: WorkerConfig
    models: Mapping[str, ModelRef]
    destinations: Mapping[str, Destination]
    dispatch: DispatchConfig
    routes: tuple[Route, ...]
    http: HttpConfig
    log: LogConfig
    uid_root: str
    sources: tuple[str, ...] = field(default=())
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def summary(self) -> dict[str, Any]:
        """Effective settings for the startup log line (no secrets: key paths only)."""
        return {
            "ae_title": self.node.ae_title, "listen": f"{self.node.host}:{self.node.port}",
            "tls": self.node.tls.enabled, "allow": [str(a) for a in self.node.allow],
            "spool": str(self.spool.path), "quiet_s": self.assembly.quiet_s,
            "routes": [r.name for r in self.routes], "models": sorted(self.models),
            "destinations": sorted(self.destinations), "http_port": self.http.port,
            "sources": list(self.sources),
        }


def default_config_text() -> str:
    """The embedded default configuration as YAML text."""
    return resources.files("dicomnode").joinpath("defaults/dicomnode.yaml").read_text()


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return over


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    parts = [p for p in dotted.split(".") if p]
    if not parts or parts[0] not in _SECTIONS:
        raise ConfigError(origin, dotted, f"the first part must be one of {', '.join(_SECTIONS)}")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(origin, dotted, f"'{part}' is not a mapping; cannot set a sub-key")
    node[parts[-1]] = value


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith("DICOMNODE_") or "__" not in name:
            continue
        dotted = name[len("DICOMNODE_"):].lower().replace("__", ".")
        _set_dotted(out, dotted, yaml.safe_load(raw) if raw else "", name)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError("--config", str(path), "the file does not exist; give a YAML file path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("--config", str(path), f"not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("(top level)", type(data).__name__, "the file must be a YAML mapping")
    unknown = [k for k in data if k not in _SECTIONS]
    if unknown:
        hint = difflib.get_close_matches(unknown[0], _SECTIONS, n=1)
        fix = f"did you mean '{hint[0]}'?" if hint else f"known sections: {', '.join(_SECTIONS)}"
        raise ConfigError(unknown[0], data[unknown[0]], f"unknown section; {fix}")
    return data


def _build(data: dict[str, Any], sources: tuple[str, ...]) -> Config:
    models = _models(data.get("models") or {})
    destinations = _destinations(data.get("destinations") or {})
    routes = _routes(data.get("routes") or [], models, destinations)
    uid_root = str(data.get("uid_root", ""))
    if not uid_root.endswith(".") or len(uid_root) > 40 or not uid_root.replace(".", "").isdigit():
        raise ConfigError("uid_root", uid_root, "use digits and dots ending in '.', ≤ 40 chars")
    return Config(
        node=NodeConfig.parse(Section(data.get("node"), "node")),
        spool=SpoolConfig.parse(Section(data.get("spool"), "spool")),
        assembly=AssemblyConfig.parse(Section(data.get("assembly"), "assembly")),
        worker=WorkerConfig.parse(Section(data.get("worker"), "worker")),
        models=models, destinations=destinations,
        dispatch=DispatchConfig.parse(Section(data.get("dispatch"), "dispatch")),
        routes=routes,
        http=HttpConfig.parse(Section(data.get("http"), "http")),
        log=LogConfig.parse(Section(data.get("log"), "log")),
        uid_root=uid_root, sources=sources,
        executor=ExecutorConfig.parse(Section(data.get("executor"), "executor")),
    )


def _models(raw: Any) -> dict[str, ModelRef]:
    if not isinstance(raw, dict):
        raise ConfigError("models", raw, "must map model id -> {path: FOLDER}")
    return {str(k): ModelRef.parse(Section(v, f"models.{k}")) for k, v in raw.items()}


def _destinations(raw: Any) -> dict[str, Destination]:
    if not isinstance(raw, dict):
        raise ConfigError("destinations", raw, "must map name -> {type: folder|dimse|stow, ...}")
    return {str(k): Destination.parse(str(k), Section(v, f"destinations.{k}")) for k, v in raw.items()}


def _routes(raw: Any, models: Mapping[str, ModelRef], dests: Mapping[str, Destination]) -> tuple[Route, ...]:
    if not isinstance(raw, list):
        raise ConfigError("routes", raw, "must be a list of rules (first match wins)")
    routes = tuple(Route.parse(Section(r, f"routes[{i}]"), models, dests) for i, r in enumerate(raw))
    names = [r.name for r in routes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError("routes[].name", dupes[0], "route names must be unique")
    return routes


def load_config(
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load, merge and validate the configuration.

    Parameters
    ----------
    path
        YAML file; ``None`` runs on the embedded defaults alone.
    env
        Environment for ``DICOMNODE_*`` overrides (``os.environ`` when ``None``).
    overrides
        Dotted key → value from CLI flags (``{"node.port": 11113}``), applied last.

    Raises
    ------
    ConfigError
        With the offending key, its value and the fix.
    """
    data: dict[str, Any] = yaml.safe_load(default_config_text())
    sources = ["defaults"]
    if path is not None:
        data = _merge(data, _read_yaml(Path(path)))
        sources.append(str(path))
    env_data = _env_overrides(os.environ if env is None else env)
    if env_data:
        data = _merge(data, env_data)
        sources.append("env")
    cli: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        _set_dotted(cli, dotted, value, f"--set {dotted}")
    if cli:
        data = _merge(data, cli)
        sources.append("cli")
    return _build(data, tuple(sources))
