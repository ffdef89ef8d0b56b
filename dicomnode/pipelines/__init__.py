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

from dicomnode.errors import ModelError, RoutingError
from dicomnode.inference.manifest import ModelBundle
from dicomnode.pipelines.base import Pipeline, PipelineFactory

__all__ = ["available_pipelines", "create_pipeline", "register"]

_MODULES: dict[str, str] = {
    "mri-lln": "dicomnode.pipelines.mri_lln",
    "wsi-two-stage": "dicomnode.pipelines.wsi_two_stage",
}
_EXTRA: dict[str, PipelineFactory] = {}


def register(name: str, factory: PipelineFactory) -> None:
    """Register a pipeline factory under ``name`` (tests and site plug-ins)."""
    _EXTRA[name] = factory


def available_pipelines() -> list[str]:
    """Names of the pipelines that can be created in this installation."""
    found = [n for n, mod in _MODULES.items() if importlib.util.find_spec(mod) is not None]
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
    module = importlib.import_module(_MODULES[name])
    return cast(PipelineFactory, module.create)(bundle, settings)
