"""Processes the exporter forks, each tied to its parent by a pipe, so that the parent decides when it ends.

Used by the core process (forked from `serve`'s worker) and the span export process
(forked from the core).
"""

from __future__ import annotations

import gc
import multiprocessing
import signal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Callable


def start_child(target: Callable[..., None], *args: Any, name: str, daemon: bool = False) -> tuple[BaseProcess, Connection]:
    """Fork a process running `target(*args, child_end, parent_end)`; (the process, the parent's end of their pipe).

    Forked, not spawned: the child shares the modules already loaded (and their memory) and
    starts at once. `target` calls `detach_from_parent(parent_end)` first.

    What exists before the fork is frozen out of the cyclic garbage collector first (`gc.freeze`):
    a collection in the child would otherwise write to every object it inherited, and each page
    written is copied, no longer shared. Unfrozen, the core's first collections made about 25 MB of
    its parent's pages its own (the benchmark's memory peak, the PSS of all of `serve`: 194 → 150 MB).
    """
    gc.freeze()
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe()
    process = context.Process(target=target, args=(*args, child_end, parent_end), name=name, daemon=daemon)
    process.start()
    child_end.close()
    return process, parent_end


def detach_from_parent(parent_end: Connection) -> None:
    """Close the parent's end of the pipe and drop the parent's signal handlers.

    The fork copied `parent_end`: closed at once, the pipe closes when the parent is
    gone, which is how the child learns it should stop. The parent's Python signal
    handlers (gunicorn's, say) are not the child's; Ctrl-C reaches the whole process
    group, and the parent decides, so the child ignores it.
    """
    parent_end.close()
    for number in signal.valid_signals():
        if callable(signal.getsignal(number)):
            signal.signal(number, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
