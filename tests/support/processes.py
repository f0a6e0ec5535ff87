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
    """(gunicorn's one worker, the exporter core it forked), or None while either is missing."""
    workers = children(master)
    cores = children(workers[0]) if len(workers) == 1 else []
    return (workers[0], cores[0]) if len(cores) == 1 else None
