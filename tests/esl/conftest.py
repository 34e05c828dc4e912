"""Shared fixtures: a stand-in FreeSWITCH on an ephemeral loopback port, raw ESL sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from esl import wire
from lab.esl_standin import FreeSwitchStandin, MetaBehaviour

PASSWORD = "s3cret-ClueCon"


class RawPeer:
    """A bare TCP peer that reads exact bytes: what conformance tests compare."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frame_bytes(self, timeout: float = 5.0) -> bytes:
        """Read one complete server frame (headers, blank line, Content-Length body)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\n\n"), timeout)
        headers = wire.parse_header_block(head[:-2].decode())
        length = int(headers.get("Content-Length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout) if length else b""
        return head + body

    async def frame(self, timeout: float = 5.0) -> wire.Frame:
        data = await self.frame_bytes(timeout)
        head, _, body = data.partition(b"\n\n")
        return wire.Frame(wire.parse_header_block(head.decode()), body)

    async def frame_of_type(self, content_type: str, timeout: float = 5.0) -> wire.Frame:
        """Skip frames (events) until one of the wanted type arrives."""
        while True:
            frame = await self.frame(timeout)
            if frame.content_type == content_type:
                return frame

    async def at_eof(self, timeout: float = 5.0) -> bool:
        data = await asyncio.wait_for(self.reader.read(), timeout)
        return data == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def meta() -> MetaBehaviour:
    return MetaBehaviour()


@pytest.fixture
async def standin(meta: MetaBehaviour) -> AsyncIterator[FreeSwitchStandin]:
    server = FreeSwitchStandin(password=PASSWORD, meta=meta)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def raw_inbound(standin: FreeSwitchStandin) -> AsyncIterator[RawPeer]:
    reader, writer = await asyncio.open_connection(standin.host, standin.port)
    peer = RawPeer(reader, writer)
    try:
        yield peer
    finally:
        peer.close()


async def authed(peer: RawPeer) -> RawPeer:
    assert await peer.frame_bytes() == b"Content-Type: auth/request\n\n"
    await peer.send(f"auth {PASSWORD}\n\n".encode())
    assert await peer.frame_bytes() == b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
    return peer


class OutboundCapture:
    """A fake controller socket: accepts the stand-in's outbound connections as RawPeers."""

    def __init__(self) -> None:
        self.peers: asyncio.Queue[RawPeer] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.server_host = "127.0.0.1"
        self.server_port = 0

    async def start(self) -> tuple[str, int]:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.peers.put(RawPeer(reader, writer))

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.server_host, self.server_port = self.server.sockets[0].getsockname()[:2]
        return self.server_host, self.server_port

    async def next(self) -> RawPeer:
        return await asyncio.wait_for(self.peers.get(), 5)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def capture() -> AsyncIterator[OutboundCapture]:
    cap = OutboundCapture()
    await cap.start()
    try:
        yield cap
    finally:
        cap.close()
