"""What a process the exporter forks does first, so that its parent decides when it ends.

Used by the core process (forked from `serve`'s worker) and the span export process
(forked from the core).
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext


def fork_context() -> ForkContext:
    """Forked, not spawned: the child shares the modules already loaded (and their memory) and starts at once."""
    return multiprocessing.get_context("fork")


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
