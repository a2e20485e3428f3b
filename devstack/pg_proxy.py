"""A TCP fault proxy in front of Postgres: the database faults a network can cause.

It pipes bytes between the client and the server and, where a fault for target ``postgres``
fires (checked on each new connection and on each chunk the client sends):

- ``error`` / ``status``  reset the connection (both sides see ECONNRESET)
- ``latency``             delay the chunk by ``delay_ms``
- ``hang``                stop relaying on this connection (for ``delay_ms``, or for good)
- ``drop_response``       relay the chunk, then reset before the server's answer reaches the
                          client: the query ran, the client never learns it did
- ``down``                close the port and cut every open connection
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from devstack.config import LOOPBACK
from devstack.faults import HANG_FOREVER_S, Fault, FaultRegistry

log = logging.getLogger("devstack.pg_proxy")
TARGET = "postgres"
STATEMENT = "statement"
CHUNK = 64 * 1024


def _executes(chunk: bytes) -> bool:
    """Whether a chunk of frontend messages holds a Query ('Q') or an Execute ('E').

    Frontend messages are a type byte and a big-endian length that counts itself; the startup
    packet (no type byte) only comes first on a connection and holds neither.
    """
    offset = 0
    while offset + 5 <= len(chunk):
        kind = chunk[offset : offset + 1]
        if kind in (b"Q", b"E"):
            return True
        offset += 1 + int.from_bytes(chunk[offset + 1 : offset + 5], "big")
    return False


class _Connection:
    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        self.drop_next_response = False

    def reset(self) -> None:
        for writer in (self.client_writer, self.server_writer):
            transport = writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0 makes close() send RST: the peer sees a reset, not a clean EOF.
                with contextlib.suppress(OSError):
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
            transport.abort()


class PostgresFaultProxy:
    def __init__(self, *, listen_port: int, upstream_port: int, registry: FaultRegistry) -> None:
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.registry = registry
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        registry.on_down_change(self._on_down_change)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, LOOPBACK, self.listen_port, reuse_address=True
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.reset_all()
        for task in self._handlers:
            task.cancel()
        # Let the pipes see their sockets gone and end, rather than be cancelled mid-read.
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def reset_all(self) -> int:
        """Reset every open connection; returns how many there were."""
        connections = list(self._connections)
        for conn in connections:
            conn.reset()
        self._connections.clear()
        return len(connections)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def _on_down_change(self, target: str, down: bool) -> None:
        if target != TARGET:
            return
        if down:
            if self._server is not None:
                self._server.close()
                self._server = None
            self.reset_all()
            log.info("postgres proxy is down")
        elif self._server is None:
            await self.start()
            log.info("postgres proxy is back up")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.registry.record_request(TARGET)
        fault = self.registry.pick(TARGET, None)
        if fault is not None and fault.kind in ("error", "status", "down", "drop_response"):
            writer.transport.abort()
            return
        if fault is not None:
            await self._delay(fault)
            if fault.kind == "hang":
                writer.transport.abort()
                return
        try:
            server = await asyncio.open_connection(LOOPBACK, self.upstream_port)
        except OSError:
            writer.transport.abort()  # the server is down: the client sees a reset
            return
        conn = _Connection((reader, writer), server)
        self._connections.add(conn)
        try:
            await asyncio.gather(self._client_to_server(conn), self._server_to_client(conn))
        finally:
            self._connections.discard(conn)
            conn.server_writer.close()
            writer.close()

    @staticmethod
    async def _delay(fault: Fault) -> None:
        if fault.kind == "latency":
            await asyncio.sleep(fault.delay_ms / 1000)
        elif fault.kind == "hang":
            await asyncio.sleep(fault.delay_ms / 1000 if fault.delay_ms else HANG_FOREVER_S)

    async def _client_to_server(self, conn: _Connection) -> None:
        try:
            while data := await conn.client_reader.read(CHUNK):
                # Losing an answer only means something when the chunk ran a statement.
                executes = _executes(data)
                skip = () if executes else ("drop_response",)
                # `match: "statement"` limits a fault to chunks that run one (not the
                # connection's startup and authentication): "n % of the queries fail".
                key = STATEMENT if executes else None
                fault = self.registry.pick(TARGET, key, skip_kinds=skip)
                if fault is not None:
                    if fault.kind in ("error", "status", "down"):
                        conn.reset()
                        return
                    if fault.kind == "drop_response":
                        conn.drop_next_response = True
                    else:
                        await self._delay(fault)
                conn.server_writer.write(data)
                await conn.server_writer.drain()
        except (ConnectionError, OSError):
            conn.reset()
        finally:
            if conn.server_writer.can_write_eof():
                with contextlib.suppress(OSError):
                    conn.server_writer.write_eof()

    async def _server_to_client(self, conn: _Connection) -> None:
        try:
            while data := await conn.server_reader.read(CHUNK):
                if conn.drop_next_response:
                    conn.reset()
                    return
                conn.client_writer.write(data)
                await conn.client_writer.drain()
        except (ConnectionError, OSError):
            conn.reset()
        finally:
            with contextlib.suppress(OSError):
                conn.client_writer.close()
