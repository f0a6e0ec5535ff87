"""What the kernel knows about a TCP connection the test holds: how far the server has read it."""

from __future__ import annotations

from pathlib import Path


def unread_by_server(server_port: int, client_port: int) -> int | None:
    """Bytes the client sent that the server's end of the connection has not read yet; None before it is accepted.

    Read from /proc/net/tcp (IPv4, 127.0.0.1): the entry whose local port is the server's and whose
    remote port is the client's is the server's socket, and its rx_queue is what waits in its buffer.
    """
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return int(queues.split(":")[1], 16)
    return None
