"""Declarative routing rules matched on DICOM keywords of a series. No ``eval``.

A rule is a mapping, nested freely::

    {all: [cond, ...]}   every condition holds
    {any: [cond, ...]}   at least one holds
    {tag: KEYWORD, <op>: ARG}

with ``<op>`` one of ``equals``, ``not_equals``, ``regex`` (search, Python syntax),
``in`` (list), ``not_in`` (list), ``range`` ([min, max], either may be null), ``exists``
(true/false). Multi-valued attributes compare as their ``\\``-joined string, except
``in``/``not_in``/``equals`` which also accept any single value matching.

Every evaluation returns a reason, so ``dicomnode rules test`` can say why a rule did or
did not match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import keyword_dict

from dicomnode.errors import RoutingError

__all__ = ["Rule", "compile_rule", "first_match"]

_OPS = ("equals", "not_equals", "regex", "in", "not_in", "range", "exists")


@dataclass(frozen=True)
class Rule:
    """A compiled rule; call :meth:`evaluate` with a header mapping."""

    test: Callable[[Mapping[str, Any]], tuple[bool, str]]
    source: Mapping[str, Any]

    def evaluate(self, headers: Mapping[str, Any]) -> tuple[bool, str]:
        """Return (matched, reason) for a series' headers."""
        return self.test(headers)


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _condition(tag: str, op: str, arg: Any) -> Callable[[Mapping[str, Any]], tuple[bool, str]]:
    def check(h: Mapping[str, Any]) -> tuple[bool, str]:
        value = h.get(tag)
        vals = _values(value)
        joined = "\\".join(vals)
        if op == "exists":
            ok = (value is not None and joined != "") == bool(arg)
        elif value is None:
            return False, f"{tag} is absent"
        elif op in ("equals", "not_equals"):
            ok = (joined == str(arg) or str(arg) in vals) == (op == "equals")
        elif op == "regex":
            ok = arg.search(joined) is not None
        elif op in ("in", "not_in"):
            ok = any(v in arg for v in vals) == (op == "in")
        else:
            ok = _in_range(vals, arg)
        shown = arg.pattern if op == "regex" else arg
        return ok, f"{tag}={joined!r} {'satisfies' if ok else 'fails'} {op} {shown!r}"
    return check


def _in_range(vals: Sequence[str], bounds: tuple[float | None, float | None]) -> bool:
    try:
        number = float(vals[0])
    except (ValueError, IndexError):
        return False
    low, high = bounds
    return (low is None or number >= low) and (high is None or number <= high)


def _compile_leaf(spec: Mapping[str, Any], where: str) -> Callable[[Mapping[str, Any]], tuple[bool, str]]:
    tag = spec.get("tag")
    if not isinstance(tag, str) or tag not in keyword_dict:
        raise RoutingError(f"{where}: 'tag' must be a DICOM keyword such as Modality, got {tag!r}")
    ops = [k for k in spec if k != "tag"]
    if len(ops) != 1 or ops[0] not in _OPS:
        raise RoutingError(f"{where}: give exactly one operator of {', '.join(_OPS)}; got {ops}")
    op, arg = ops[0], spec[ops[0]]
    if op == "regex":
        try:
            arg = re.compile(str(arg))
        except re.error as exc:
            raise RoutingError(f"{where}: bad regex {arg!r}: {exc}") from exc
    elif op in ("in", "not_in"):
        if not isinstance(arg, list):
            raise RoutingError(f"{where}: '{op}' needs a list of values")
        arg = [str(a) for a in arg]
    elif op == "range":
        if not isinstance(arg, list) or len(arg) != 2 or not all(a is None or isinstance(a, (int, float)) for a in arg):
            raise RoutingError(f"{where}: 'range' needs [min, max] numbers (null for open)")
        arg = (arg[0], arg[1])
    elif op == "exists" and not isinstance(arg, bool):
        raise RoutingError(f"{where}: 'exists' needs true or false")
    return _condition(tag, op, arg)


def _compile(spec: Any, where: str) -> Callable[[Mapping[str, Any]], tuple[bool, str]]:
    if not isinstance(spec, Mapping):
        raise RoutingError(f"{where}: a rule must be a mapping, got {spec!r}")
    groups = [k for k in ("all", "any") if k in spec]
    if not groups:
        return _compile_leaf(spec, where)
    if len(spec) != 1 or not isinstance(spec[groups[0]], list) or not spec[groups[0]]:
        raise RoutingError(f"{where}: '{groups[0]}' must be the only key and hold a non-empty list")
    kind = groups[0]
    parts = [_compile(s, f"{where}.{kind}[{i}]") for i, s in enumerate(spec[kind])]

    def combined(h: Mapping[str, Any]) -> tuple[bool, str]:
        results = [p(h) for p in parts]
        ok = all(r[0] for r in results) if kind == "all" else any(r[0] for r in results)
        shown = [r[1] for r in results if r[0] == ok] or [r[1] for r in results]
        return ok, f"{kind}({'; '.join(shown)})"
    return combined


def compile_rule(spec: Mapping[str, Any]) -> Rule:
    """Compile a rule mapping, raising :class:`RoutingError` naming the bad part."""
    return Rule(test=_compile(spec, "match"), source=spec)


def first_match(routes: Sequence[Any], headers: Mapping[str, Any]) -> tuple[Any | None, list[tuple[str, bool, str]]]:
    """Return the first route whose rule matches, and (name, matched, reason) for each tried.

    ``routes`` are objects with ``name`` and ``rule`` attributes (:class:`dicomnode.config.Route`).
    """
    trace: list[tuple[str, bool, str]] = []
    for route in routes:
        ok, reason = route.rule.evaluate(headers)
        trace.append((route.name, ok, reason))
        if ok:
            return route, trace
    return None, trace
