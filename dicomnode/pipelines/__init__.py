"""Pipeline registry: name → module that exposes ``create(bundle, settings)``.

A route may also name a plug-in as ``"package.module:create"``.

Modules are imported only when a route uses them, so a node without torch installed can
still run WSI routes. Only pipelines that exist are registered: there is no fake default.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any, cast

from dicomnode.errors import DicomNodeError, ModelError, RoutingError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.pipelines.base import Pipeline, PipelineFactory

__all__ = ["available_pipelines", "bundle_problem", "create_pipeline", "register", "route_problem",
           "worker_settings"]

#: The built-in pipelines: name → (module exposing ``create``, the worker settings it
#: takes). The one list of pipeline names; a new pipeline is one folder and one line here.
#: Built-ins reject settings they do not know, so each gets only its own; plug-ins get all.
_BUILTIN: dict[str, tuple[str, tuple[str, ...]]] = {
    "mri-lln": ("dicomnode.pipelines.mri_lln", ("device",)),
    "wsi-two-stage": ("dicomnode.pipelines.wsi_two_stage", ("providers",)),
}
_EXTRA: dict[str, PipelineFactory] = {}


def worker_settings(name: str, every: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of the worker settings ``every`` that pipeline ``name`` understands."""
    wanted = _BUILTIN[name][1] if name in _BUILTIN else tuple(every)
    return {key: every[key] for key in wanted}


def route_problem(name: str, model: str, task: str | None) -> str:
    """Why a route naming pipeline ``name`` cannot run ("" if it can).

    ``task`` is the task of the route's model bundle ``model`` (``None``: not loaded yet;
    only the pipeline is checked). Plug-ins (``package.module:create``) are checked when
    the worker creates them.
    """
    if ":" in name or name in _EXTRA:
        return ""
    if name not in available_pipelines():
        return f"pipeline '{name}' is not installed (available: {', '.join(available_pipelines()) or 'none'})"
    if task is not None and task != name:
        return f"model '{model}' is for task '{task}', not '{name}'"
    return ""


def bundle_problem(name: str, bundle: ModelBundle) -> str:
    """Why built-in pipeline ``name`` cannot use ``bundle`` ("" if it can, or if the pipeline
    has no ``check_bundle``): settings a bundle declares are checked at start, not per job."""
    if name not in _BUILTIN:
        return ""
    check = getattr(importlib.import_module(_BUILTIN[name][0]), "check_bundle", None)
    if check is None:
        return ""
    try:
        check(bundle)
    except DicomNodeError as exc:
        return str(exc)
    return ""


def register(name: str, factory: PipelineFactory) -> None:
    """Register a pipeline factory under ``name`` (tests and site plug-ins)."""
    _EXTRA[name] = factory


def available_pipelines() -> list[str]:
    """Names of the pipelines that can be created in this installation."""
    found = [n for n, (mod, _) in _BUILTIN.items() if importlib.util.find_spec(mod) is not None]
    return sorted({*found, *_EXTRA})


def create_pipeline(name: str, bundle: ModelBundle, settings: Mapping[str, Any]) -> Pipeline:
    """Build the pipeline ``name`` for ``bundle``.

    Raises
    ------
    RoutingError
        No pipeline of that name exists.
    ModelError
        The bundle was made for another task.
    """
    if name in _EXTRA:
        return _EXTRA[name](bundle, settings)
    if ":" in name:  # a site plug-in: "package.module:create"
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise RoutingError(f"pipeline plug-in '{name}' cannot be imported: {exc}") from exc
        return cast(PipelineFactory, factory)(bundle, settings)
    if name not in available_pipelines():
        raise RoutingError(
            f"pipeline '{name}' does not exist; available: {', '.join(available_pipelines())}"
        )
    if bundle.task != name:
        raise ModelError(f"model '{bundle.id}' is for task '{bundle.task}', not pipeline '{name}'")
    module = importlib.import_module(_BUILTIN[name][0])
    return cast(PipelineFactory, module.create)(bundle, settings)
