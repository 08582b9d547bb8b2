"""A TCP proxy that delays each direction by a fixed time: a server across the internet.

    python bench/latency_proxy.py LISTEN_PORT UPSTREAM_HOST:PORT [DELAY_SECONDS]

Every chunk read from one side is written to the other DELAY seconds later (0.025 by
default: a 50 ms round trip, as to a hosted SMTP relay), in order, without limiting the
bandwidth. Prints `ready` once it listens. Used by bench/send.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk `delay` late; order kept by one queue per direction."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((loop.time() + delay, b""))
    with contextlib.suppress(ConnectionError):
        await sender


async def main(listen: int, upstream: str, delay: float) -> None:
    host, _, port = upstream.rpartition(":")

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pump(client_r, server_w, delay), pump(server_r, client_w, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.025
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], delay))
