"""Load generators: `wrk` (Debian's) for maximum rates, and a paced open-loop generator for latency.

wrk finds the maximum: a fixed number of connections, each sending its next request
as soon as the last is answered. Debian's wrk is not wrk2 (no `-R`), and latency
measured that way hides queueing (coordinated omission), so latency at a given rate
comes from `paced`: one asyncio loop that starts request i at exactly start + i/rate,
on whichever persistent connection is free, and measures each latency from that
scheduled moment, so time a request waited for a connection counts against the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

WRK_DIR = Path(__file__).resolve().parent / "wrk"
WRK_REPORT = "WRK_REPORT "
"""Prefix of the JSON line bench/wrk/common.lua prints when a run is done."""


class LoadError(RuntimeError):
    """The load generator could not run, or the server answered with errors."""


def ensure_wrk() -> str:
    """The path of `wrk`; installs Debian's package first when it is missing (apt-get, as root or with sudo)."""
    found = shutil.which("wrk")
    if found:
        return found
    policy = subprocess.run(["apt-cache", "policy", "wrk"], capture_output=True, text=True).stdout
    if "Candidate: (none)" in policy or "Candidate:" not in policy:
        subprocess.run(_as_root(["apt-get", "update", "-qq"]), check=True)
    print("wrk is missing: installing Debian's `wrk` package (apt-get install wrk) ...", file=sys.stderr, flush=True)
    subprocess.run(
        _as_root(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"]),
        check=True,
    )
    found = shutil.which("wrk")
    if not found:
        raise LoadError("apt-get installed `wrk` but it is not on PATH")
    return found


def _as_root(command: list[str]) -> list[str]:
    return command if os.geteuid() == 0 else ["sudo", *command]


@dataclass(frozen=True)
class WrkResult:
    """One wrk run, as reported by bench/wrk/common.lua's `done`."""

    requests: int
    seconds: float
    errors: dict[str, int]
    latency_ms: dict[str, float]
    counters: dict[str, int]

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds

    @property
    def failed(self) -> int:
        """Requests not answered 2xx/3xx, or lost to a socket error or timeout."""
        return sum(self.errors.values())


def run_wrk(url: str, script: str, args: Iterable[str] = (), *, seconds: float, connections: int, threads: int = 1) -> WrkResult:
    """`wrk` against `url` with bench/wrk/`script` and its arguments; LoadError when it fails."""
    command = [
        ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(WRK_DIR / script), url, "--", *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    reports = [line for line in done.stdout.splitlines() if line.startswith(WRK_REPORT)]
    if done.returncode != 0 or not reports:
        raise LoadError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    report: dict[str, Any] = json.loads(reports[-1].removeprefix(WRK_REPORT))
    return WrkResult(
        requests=report["requests"],
        seconds=report["duration_us"] / 1e6,
        errors=report["errors"],
        latency_ms={name: value / 1000 for name, value in report["latency_us"].items()},
        counters=report["counters"],
    )


@dataclass
class PacedResult:
    """An open-loop run: what was scheduled, what came back, and each latency from its scheduled start."""

    rate: float
    seconds: float
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """The q-th percentile latency (nearest rank), in milliseconds."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    @property
    def failed(self) -> int:
        return self.errors + sum(count for status, count in self.statuses.items() if status >= 400)


class _Connection:
    """One persistent HTTP/1.1 connection: send a prepared request, read the status and body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> "_Connection":
        return cls(*await asyncio.open_connection(host, port))

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        self.writer.close()


async def _paced(
    host: str, port: int, make_request: Callable[[], bytes], rate: float, seconds: float, connections: int
) -> PacedResult:
    result = PacedResult(rate=rate, seconds=seconds)
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    opened = [await _Connection.open(host, port) for _ in range(connections)]
    for connection in opened:
        idle.put_nowait(connection)
    loop = asyncio.get_running_loop()

    async def one(scheduled: float, request: bytes) -> None:
        connection = await idle.get()
        try:
            status = await connection.exchange(request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            result.errors += 1
            connection.close()
            connection = await _Connection.open(host, port)
        else:
            result.statuses[status] += 1
            result.latencies_ms.append((loop.time() - scheduled) * 1000)
        idle.put_nowait(connection)

    tasks = []
    start = loop.time() + 0.05
    total = int(rate * seconds)
    for i in range(total):
        scheduled = start + i / rate
        request = make_request()  # prepared before its moment, so building it never delays the send
        # also when behind schedule: the requests already started need the loop to progress
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        tasks.append(asyncio.ensure_future(one(scheduled, request)))
        result.sent += 1
    await asyncio.gather(*tasks)
    for connection in opened:
        connection.close()
    return result


def paced(url: str, make_request: Callable[[], bytes], *, rate: float, seconds: float, connections: int = 32) -> PacedResult:
    """Send `rate` requests a second for `seconds` on a schedule, whatever the answers' pace (open loop)."""
    host, port = _host_port(url)
    return asyncio.run(_paced(host, port, make_request, rate, seconds, connections))


async def _closed(host: str, port: int, requests: Iterator[bytes], connections: int, on_answer: Callable[[int], None]) -> None:
    async def worker() -> None:
        connection = await _Connection.open(host, port)
        try:
            for request in requests:  # a shared iterator: each request goes out once
                on_answer(await connection.exchange(request))
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


def closed_loop(url: str, requests: Iterable[bytes], *, connections: int, on_answer: Callable[[int], None]) -> None:
    """Send every request as fast as `connections` persistent connections allow; `on_answer(status)` after each."""
    host, port = _host_port(url)
    asyncio.run(_closed(host, port, iter(requests), connections, on_answer))


def _host_port(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
    return host, int(port)

