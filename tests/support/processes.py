"""The processes of a running `serve`, found through /proc: gunicorn's master, its worker, the core the worker started."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running, and not merely a zombie waiting for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def worker_and_core(master: int) -> tuple[int, int] | None:
    """(gunicorn's one worker, the exporter core it spawned), or None while either is missing.

    The worker has a second child, multiprocessing's resource tracker; the core is the
    one started by `multiprocessing.spawn`.
    """
    workers = children(master)
    if len(workers) != 1:
        return None
    cores = [pid for pid in children(workers[0]) if b"multiprocessing.spawn" in _cmdline(pid)]
    return (workers[0], cores[0]) if len(cores) == 1 else None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""
