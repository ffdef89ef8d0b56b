"""What the subcommands share: ``HOST:PORT`` arguments and loading the config."""

from __future__ import annotations

import argparse

from dicomnode.config import Config, load_config

__all__ = ["hostport", "load"]


def hostport(value: str) -> tuple[str, int]:
    """argparse type of a ``HOST:PORT`` argument."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def load(args: argparse.Namespace) -> Config:
    """The config of ``--config`` (embedded defaults without it), ``--port`` applied."""
    overrides = {}
    if getattr(args, "port", None) is not None:
        overrides["node.port"] = args.port
    return load_config(args.config, overrides=overrides)
