"""The exporter core in a process of its own, beside `serve`'s HTTP worker.

Why a second process: a Python process runs one thread at a time (the
interpreter lock), and that, not the CPU, bounded the server: with everything
in one process the machine stayed over a third idle (BENCHMARKS.md). Now the
HTTP worker reads, authenticates and forwards each request, and the core
parses, records and exports in its own process, on another CPU. The guarantees
do not change: a request is answered only after the core has committed its
events, and the core is still the state's single writer.

The link: the core listens on an abstract Unix socket (no file, so a read-only
filesystem is fine) and serves only connections that prove they know a random
key (multiprocessing's challenge, answered in the connection's own thread so a
silent client cannot hold up the others). Each HTTP thread keeps one
connection; a call is one pickled `(name, args)` and one pickled `(ok, value)`.
The core's own exceptions travel as values and are raised again in the
worker, so InvalidInput and StateUnavailable mean what they mean in process;
a link that breaks is CoreUnavailable, a StateUnavailable (nothing can be
recorded: the sender retries).

Lifetimes: the worker starts the core and waits until it is ready. A pipe only
the two of them hold carries `stop`; when it closes without one (the worker
died), the core stops by itself. When the core dies, `on_exit` is told, and
`serve` replaces its worker, which starts a new core.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import pickle
import secrets
import threading
import time
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from typing import TYPE_CHECKING, Any, Callable

from exporter.child_process import detach_from_parent, start_child
from exporter.config import Config
from exporter.parsing import InvalidInput
from exporter.settings import Settings
from exporter.state import StateUnavailable

if TYPE_CHECKING:
    from exporter.core import Exporter

log = logging.getLogger(__name__)

CALLS = frozenset({
    "ingest_body", "ingest_event", "count_received", "render_metrics", "problems", "signal_subscription",
    "refresh_definitions",
})
"""The `Core` methods a connection may call; `stop` comes only through the pipe."""
PROTOCOL = pickle.HIGHEST_PROTOCOL
"""Calls are pickled with the plain pickler: multiprocessing's own (`send`) builds a Python subclass per message."""
START_TIMEOUT_SECONDS = 60.0
"""How long the worker waits for a new core (imports, opening the state) before giving up."""
ORPHAN_STOP_SECONDS = 5.0
"""How long a core whose worker died takes to stop: well within SQLite's 10 s wait of the next core for the state."""
EXIT_GRACE_SECONDS = 5.0
"""How long past its stop timeout a stopping core may take to exit before it is killed."""


class CoreUnavailable(StateUnavailable):
    """The core process cannot be reached, so nothing was recorded; retry later."""


class RemoteCore:
    """A `Core` (exporter.core_api) whose calls run in a process of its own; see the module docstring."""

    def __init__(self, settings: Settings, config: Config, on_exit: Callable[[int | None], None]) -> None:
        self.settings = settings
        self.config = config
        self._authkey = secrets.token_bytes(32)
        self.address = f"\0inngest-cancellation-exporter-{os.getpid()}-{secrets.token_hex(8)}"
        """Where the core listens: an abstract Unix socket (Linux), served only to holders of the key."""
        self._local = threading.local()
        self._stopping = False
        # the caller (serve's worker, before it serves) has no other thread now, so the fork copies no lock while held
        self._process, self._pipe = start_child(
            run_core, settings, config, self.address, self._authkey, name="exporter-core"
        )
        self._await_ready()
        threading.Thread(target=self._watch, args=(on_exit,), name="core-watch", daemon=True).start()

    def _await_ready(self) -> None:
        try:
            if not self._pipe.poll(START_TIMEOUT_SECONDS):
                raise RuntimeError(f"the exporter core did not start within {START_TIMEOUT_SECONDS:.0f} s")
            message = self._pipe.recv()
        except EOFError:
            self._process.join()
            message = f"it exited with code {self._process.exitcode}"
        except RuntimeError:
            self._process.kill()
            raise
        if message != "ready":
            raise RuntimeError(f"the exporter core could not start: {message}")

    def _watch(self, on_exit: Callable[[int | None], None]) -> None:
        self._process.join()
        if not self._stopping:
            log.error("the exporter core exited (code %s) without being asked to", self._process.exitcode)
            on_exit(self._process.exitcode)

    def _call(self, name: str, *args: Any) -> Any:
        connection: Connection | None = getattr(self._local, "connection", None)
        try:
            if connection is None:
                connection = self._local.connection = Client(self.address, family="AF_UNIX", authkey=self._authkey)
            connection.send_bytes(pickle.dumps((name, args), PROTOCOL))
            ok, value = pickle.loads(connection.recv_bytes())
        except (OSError, EOFError) as err:
            self._local.connection = None
            raise CoreUnavailable(f"the exporter core is not running ({type(err).__name__}); retry later") from None
        if not ok:
            raise value
        return value

    def ingest_body(self, body: bytes, ingress: str) -> bytes:
        answer: bytes = self._call("ingest_body", body, ingress)
        return answer

    def ingest_event(self, raw: dict[str, Any], ingress: str) -> dict[str, int]:
        result: dict[str, int] = self._call("ingest_event", raw, ingress)
        return result

    def count_received(self, ingress: str, outcome: str) -> None:
        try:
            self._call("count_received", ingress, outcome)
        except CoreUnavailable:
            pass  # the counters went with the core; its successor starts them from zero

    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        body, content_type = self._call("render_metrics", accept)
        return body, content_type

    def problems(self) -> list[str]:
        try:
            problems: list[str] = self._call("problems")
        except CoreUnavailable as err:
            return [str(err)]
        return problems

    def signal_subscription(self) -> tuple[list[str], str | None]:
        names, own_url = self._call("signal_subscription")
        return names, own_url

    def refresh_definitions(self) -> None:
        self._call("refresh_definitions")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the core to stop (it flushes spans, leaves Datadog events in the outbox) and wait for it to exit."""
        self._stopping = True
        try:
            self._pipe.send(("stop", timeout))
        except OSError:
            pass  # already gone
        self._process.join(timeout + EXIT_GRACE_SECONDS)
        if self._process.is_alive():
            log.error("the exporter core did not stop within %.0f s: killing it", timeout + EXIT_GRACE_SECONDS)
            self._process.kill()
            self._process.join()
        self._pipe.close()


def run_core(
    settings: Settings, config: Config, address: str, authkey: bytes, pipe: Connection, worker_end: Connection
) -> None:
    """The core process: build the exporter, serve calls until the worker says stop or is gone.

    `worker_end` is the worker's end of the pipe, copied by the fork: closed at once, so
    that the pipe closes when the worker is gone.
    """
    detach_from_parent(worker_end)
    try:
        from exporter.core import Exporter

        exporter = Exporter(settings, config)
        listener = Listener(address, family="AF_UNIX")
    except Exception as err:
        log.exception("the exporter core could not start")
        pipe.send(f"{type(err).__name__}: {err}")
        return
    exporter.start()
    gc.freeze()  # as in the worker (exporter.server): what exists now lives as long as the process
    threading.Thread(target=_accept, args=(listener, exporter, authkey), name="core-accept", daemon=True).start()
    pipe.send("ready")
    try:
        _, timeout = pipe.recv()
    except EOFError:
        log.warning("the HTTP worker is gone: stopping the exporter core")
        timeout = ORPHAN_STOP_SECONDS
    exporter.stop(timeout)


def _accept(listener: Listener, exporter: Exporter, authkey: bytes) -> None:
    while True:
        try:
            connection = listener.accept()
        except OSError as err:  # out of file descriptors, say: the worker's threads that are connected go on
            log.error("the exporter core cannot accept a connection: %s", err)
            time.sleep(1.0)
            continue
        threading.Thread(
            target=_serve, args=(connection, exporter, authkey), name="core-calls", daemon=True
        ).start()


def _serve(connection: Connection, exporter: Exporter, authkey: bytes) -> None:
    """One worker thread's calls, in order, until it closes its end."""
    with connection:
        try:
            deliver_challenge(connection, authkey)
            answer_challenge(connection, authkey)
        except (OSError, EOFError, multiprocessing.AuthenticationError) as err:
            log.warning("refused a connection to the exporter core: %s", err)
            return
        while True:
            try:
                name, args = pickle.loads(connection.recv_bytes())
            except (OSError, EOFError):
                return
            connection.send_bytes(pickle.dumps(_answer(exporter, name, args), PROTOCOL))


def _answer(exporter: Exporter, name: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
    if name not in CALLS:
        return False, RuntimeError(f"the exporter core has no call {name!r}")
    try:
        return True, getattr(exporter, name)(*args)
    except (InvalidInput, StateUnavailable) as err:
        return False, err
    except Exception as err:  # a bug: logged here with its traceback, raised in the worker as a plain error
        log.exception("%s failed in the exporter core", name)
        return False, RuntimeError(f"{name} failed in the exporter core: {type(err).__name__}: {err}")
