"""The ingest ladder: dicomnode's own C-STORE path with steps taken out, for bench/ingest.py.

Where does a dicomnode receiver spend its time per instance, compared with dcmtk
``storescp``? Each mode runs the node's real :class:`~dicomnode.net.scp.StorageSCP` (the
same pynetdicom 3.0.4 tuning, chunked receive into the spool's ``tmp/``, the same
handler and answer) and replaces only what the handler does with the received file:

``noop``
    delete it and answer success: pynetdicom's receive path alone (the floor of any
    pynetdicom receiver with our settings);
``parse``
    + read the header once (``read_header``, pixel completeness check, routing headers);
``durable``
    + parse, then take the file into the spool, commit it into its series folder under the
    series lock and wait for the group-committed ``syncfs`` before answering — everything
    the node does except the assembler hand-off and the metrics.

The full node is bench/ingest.py's ``dicomnode`` receiver. Usage (a subprocess of the bench):
``python bench/ladder_scp.py MODE PORT SPOOL_DIR``; it prints ``ready`` once listening.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.config import load_config  # noqa: E402
from dicomnode.dicom.headers import instance_info, routing_headers  # noqa: E402
from dicomnode.metrics import Metrics  # noqa: E402
from dicomnode.net.scp import StorageSCP, read_header  # noqa: E402
from dicomnode.spool import Spool  # noqa: E402

MODES = ("noop", "parse", "durable")


def _answer(sop_uid: str, series_uid: str) -> Any:
    """What ``handle_store`` logs of a stored instance (its debug line reads these)."""
    return SimpleNamespace(info=SimpleNamespace(sop_instance_uid=sop_uid, series_uid=series_uid), new=True)


def store_step(mode: str, spool: Spool) -> Any:
    """The replacement of ``StorageSCP._store`` for ``mode``."""
    def noop(event: Any) -> Any:
        Path(event.dataset_path).unlink()
        return _answer("", "")

    def parse(event: Any) -> Any:
        received = Path(event.dataset_path)
        ds = read_header(received)
        info, _ = instance_info(ds), routing_headers(ds)
        received.unlink()
        return _answer(info.sop_instance_uid, info.series_uid)

    def durable(event: Any) -> Any:
        received = Path(event.dataset_path)
        ds = read_header(received)
        info, headers = instance_info(ds), routing_headers(ds)
        tmp = spool.adopt_temp(received)
        with spool.series_lock(info.series_uid):
            spool.commit_instance(tmp, info.series_uid, info.sop_instance_uid, headers)
            spool.make_durable()
        return _answer(info.sop_instance_uid, info.series_uid)

    return {"noop": noop, "parse": parse, "durable": durable}[mode]


def main() -> int:
    mode, port, root = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    assert mode in MODES, f"mode must be one of {MODES}"
    config = load_config(None, env={}, overrides={"node.port": port, "spool.path": str(root), "spool.min_free_mb": 1,
                                                  "http.port": 0, "node.max_associations": 16})
    spool = Spool(config.spool.path, config.spool.sync)
    scp = StorageSCP(config, spool, Metrics(), lambda _: None)
    scp._store = store_step(mode, spool)  # type: ignore[method-assign]
    scp.start()
    print("ready", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
