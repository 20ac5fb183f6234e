"""A TCP fault proxy on loopback between mailflow and a server (SMTP, IMAP), switchable at runtime.

    proxy = FaultProxy(server.host, server.port).start()   # listens on proxy.host:proxy.port
    proxy.delay(0.5)          # every chunk, both ways, forwarded after 0.5 s
    proxy.cut(after=200)      # connections are closed once 200 bytes went client -> server
    proxy.cut(after=300, direction="down")   # ... or server -> client
    proxy.lose_reply(b"250 2.0.0")  # the server did the work, the client never hears it
    proxy.refuse()            # new connections are reset at once (RST)
    proxy.blackhole()         # bytes are swallowed both ways; nothing is answered, nothing closed
    proxy.heal()              # plain forwarding again
    proxy.stop()

The mode is read for every chunk, so switching also hits open connections (a blackhole in the
middle of an IMAP IDLE is a silent network partition). `faults` counts each injected fault by kind.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Literal

from tests.support.ports import free_port

HOST = "127.0.0.1"
Mode = Literal["pass", "delay", "cut", "refuse", "blackhole", "lose_reply"]


@dataclass
class _Settings:
    mode: Mode = "pass"
    delay_s: float = 0.0
    cut_after: int = 0
    direction: Literal["up", "down"] = "up"
    pattern: bytes = b""


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host, self.port = HOST, free_port()
        self.faults: collections.Counter[str] = collections.Counter()
        self.connections = 0
        self._s = _Settings()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()

    # -- control (any thread) -------------------------------------------------------------------
    def _set(self, **values: object) -> FaultProxy:
        with self._lock:
            self._s = _Settings(**values)  # type: ignore[arg-type]
        return self

    def heal(self) -> FaultProxy:
        return self._set(mode="pass")

    def delay(self, seconds: float) -> FaultProxy:
        return self._set(mode="delay", delay_s=seconds)

    def cut(self, after: int, direction: Literal["up", "down"] = "up") -> FaultProxy:
        return self._set(mode="cut", cut_after=after, direction=direction)

    def lose_reply(self, pattern: bytes, direction: Literal["up", "down"] = "down") -> FaultProxy:
        """Close the connection instead of forwarding a chunk containing `pattern`: "down", the server did the
        work but the client never hears it; "up", the command never reaches the server."""
        return self._set(mode="lose_reply", pattern=pattern, direction=direction)

    def refuse(self) -> FaultProxy:
        return self._set(mode="refuse")

    def blackhole(self) -> FaultProxy:
        return self._set(mode="blackhole")

    @property
    def mode(self) -> Mode:
        return self._s.mode

    def drop_all(self) -> None:
        """Close every open connection now (a server crash or a NAT timeout, as the client sees it)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._close_all)
            self.faults["drop_all"] += 1

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(self._shutdown)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self._ready.set()
        async with self._server:
            await self._stopped.wait()
        self._close_all()
        await asyncio.sleep(0)

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._stopped.set()

    # -- one connection -------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._s.mode == "refuse":
            self.faults["refuse"] += 1
            sock = writer.get_extra_info("socket")
            if sock is not None:  # RST instead of FIN: what a closed port looks like to the client
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        counted = {"up": 0, "down": 0}
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, "up", counted, writer),
                self._pipe(up_reader, writer, "down", counted, up_writer),
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str,
                    counted: dict[str, int], other: asyncio.StreamWriter) -> None:  # fmt: skip
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                s = self._s
                if s.mode == "blackhole":
                    self.faults["blackhole_chunk"] += 1
                    continue
                if s.mode == "delay":
                    self.faults["delay"] += 1
                    await asyncio.sleep(s.delay_s)
                if s.mode == "lose_reply" and direction == s.direction and s.pattern in data:
                    self.faults["lose_reply"] += 1
                    break
                if s.mode == "cut" and s.direction == direction:
                    room = s.cut_after - counted[direction]
                    if room < len(data):
                        if room > 0:
                            dst.write(data[:room])
                            await dst.drain()
                        counted[direction] += max(room, 0)
                        self.faults["cut"] += 1
                        break
                counted[direction] += len(data)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()
            other.close()
