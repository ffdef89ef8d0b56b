"""Logging set-up: console or JSON lines, with job/study/series ids from contextvars.

Patient name, ID and birth date are never passed to a logger anywhere in dicomnode; the
context fields are UIDs and job ids only.

Libraries do not keep that promise: highdicom warns ``The string "DOE JOHN" is unlikely to
represent the intended person name`` when it copies a single-component PatientName into a
SEG or SR, and pydicom warns ``Invalid value for VR DA: '19010203'``. So
:func:`configure_logging` (called by the CLI and by the worker child) routes Python
warnings into logging (one line, logger ``py.warnings``, no source line) instead of raw
stderr, and the handler withholds every quoted value in records of loggers outside
``dicomnode`` (library log lines and warnings): ``"…"`` becomes ``"<redacted>"``. Libraries
quote the header values they complain about; what they say about them stays readable.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["bound", "configure_logging"]

_CONTEXT: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar("dicomnode_log", default=())


@contextlib.contextmanager
def bound(**fields: str) -> Iterator[None]:
    """Bind ``job_id=…, study_uid=…, series_uid=…`` to every log record in this context."""
    token = _CONTEXT.set(tuple({**dict(_CONTEXT.get()), **fields}.items()))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.ctx = dict(_CONTEXT.get())
        return True


#: A value in single or double quotes, bytes reprs (b'...') included: the opening quote does
#: not follow a letter (the apostrophe of "doesn't" opens nothing), the closing one is not
#: followed by a letter (the apostrophe of a quoted "O'Brien^Pat" does not end it).
_QUOTED = re.compile(r"""(?<!\w)(?:[bBuU](?=["']))?(["'])(?:(?!\1).|\1(?=\w))*\1(?!\w)""", re.DOTALL)


def _redact(text: str) -> str:
    """Replace every quoted value in ``text`` by ``"<redacted>"`` (same quote character)."""
    return _QUOTED.sub(lambda m: f"{m.group(1)}<redacted>{m.group(1)}", text)


class _LibraryRedactFilter(logging.Filter):
    """Withhold quoted values in records of loggers outside ``dicomnode``.

    The record is rewritten in place (message rendered, arguments and traceback text
    redacted), so every formatter downstream sees only the redacted text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "dicomnode" or record.name.startswith("dicomnode."):
            return True
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = _redact(text), ()
        return True


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replacement: one log line on ``py.warnings``.

    A warning shown into an explicit ``file`` goes there unchanged, as with
    :func:`logging.captureWarnings`.
    """
    if file is not None:
        file.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    where = f"{Path(filename).parent.name}/{Path(filename).name}:{lineno}"
    logging.getLogger("py.warnings").warning("%s: %s (%s)", category.__name__, message, where)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name, "msg": record.getMessage(),
                 **getattr(record, "ctx", {})}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ctx = getattr(record, "ctx", {})
        extra = " ".join(f"{k}={v}" for k, v in ctx.items())
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        text = f"{base}  [{extra}]" if extra else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """Configure the root logger once per process (the CLI and the worker child).

    Python warnings are logged (logger ``py.warnings``) instead of printed to stderr, and
    quoted values in library records are withheld (see the module docstring).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _ConsoleFormatter())
    handler.addFilter(_ContextFilter())
    handler.addFilter(_LibraryRedactFilter())
    warnings.showwarning = _log_warning
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("pynetdicom", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
