"""A private PostgreSQL server (Debian ``postgresql``) for tests: unix socket only, own data dir.

:func:`postgres_server` runs ``initdb`` + ``pg_ctl start`` in a fresh temp directory, with
``listen_addresses=''`` (no TCP at all) and the socket in that directory, and stops it
afterwards with ``pg_ctl stop`` (the postmaster's own PID file). ``initdb`` refuses to run
as root, so under uid 0 the server runs as the ``postgres`` user (``runuser``) and the
directory is chowned to it. :func:`fresh_database` gives each test its own database.
Without the binaries (``/usr/lib/postgresql/*/bin``) the tests skip, naming ``make deps``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path

SUPERUSER = "dicomnode"
_databases = count()


def pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``pg_ctl``."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
             if (Path(p).parent / "pg_ctl").exists()]
    return max(found, key=lambda p: int(p.parent.name)) if found else None


def _as_owner(argv: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


@contextmanager
def postgres_server() -> Iterator[str]:
    """A running private server; yields the libpq conninfo of its ``postgres`` database."""
    bindir = pg_bin()
    assert bindir is not None, "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `make deps`"
    owner = "postgres" if os.getuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="dicomnode-pg-"))
    if owner:
        entry = pwd.getpwnam(owner)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data = root / "data"
    try:
        subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
                                  "--no-sync", "-E", "UTF8", "--locale=C"], owner),
                       check=True, capture_output=True, timeout=120)
        conninfo = f"host={root} user={SUPERUSER} dbname=postgres"
        start_server(conninfo)
        try:
            yield conninfo
        finally:
            stop_server(conninfo)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _root(conninfo: str) -> Path:
    return Path(conninfo.split("host=", 1)[1].split()[0])


def start_server(conninfo: str) -> None:
    """Start (again) the private server of ``conninfo``: its socket directory holds ``data/``."""
    root, bindir = _root(conninfo), pg_bin()
    assert bindir is not None
    owner = "postgres" if os.getuid() == 0 else None
    options = f"-c listen_addresses='' -k {root} -c fsync=off -c full_page_writes=off"
    started = subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l",
                                        str(root / "server.log"), "-w", "-t", "120", "-o", options, "start"], owner),
                             capture_output=True, text=True, timeout=150)
    if started.returncode != 0:
        log = root / "server.log"
        raise RuntimeError(f"pg_ctl start failed: {started.stderr}\n{log.read_text()[-2000:] if log.exists() else ''}")


def stop_server(conninfo: str) -> None:
    """Stop the private server of ``conninfo`` (``pg_ctl stop -m fast``: the postmaster's PID file)."""
    bindir = pg_bin()
    assert bindir is not None
    owner = "postgres" if os.getuid() == 0 else None
    subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(_root(conninfo) / "data"), "-m", "fast", "-w",
                              "stop"], owner), capture_output=True, timeout=120)


def fresh_database(conninfo: str) -> str:
    """Create an empty database on the server of ``conninfo``; its conninfo."""
    import psycopg
    name = f"t{os.getpid()}_{next(_databases)}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return conninfo.replace("dbname=postgres", f"dbname={name}")
