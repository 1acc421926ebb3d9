"""suricate inside an asyncio program, with an asyncio executor calling HTTP.

Run it with ``python examples/asyncio_face.py`` (needs ``httpx``).  It starts
a tiny HTTP server on loopback, and an agent whose executor is a plain
asyncio coroutine using ``httpx.AsyncClient`` and ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import sys

import httpx

import suricate
import suricate.aio


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await reader.readuntil(b"\r\n\r\n")
    path = request.split(b" ", 2)[1].decode()
    body = f'{{"echo": "{path}"}}'.encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.close()


async def main() -> int:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

        async def agent(turn: suricate.Turn) -> suricate.TurnResult:
            await asyncio.sleep(0.01)  # an asyncio API, on the asyncio loop
            reply = await client.get(f"/{turn.inputs[0].payload['topic']}")
            return suricate.TurnResult(result=reply.json())

        async with suricate.aio.open_runtime() as rt:
            s = await rt.open_session("researcher")
            await s.attach(agent)
            outcomes = await asyncio.gather(*(s.ask({"topic": t}, timeout=30) for t in ("a", "b", "c")))
    for outcome in outcomes:
        print(outcome.result)
    ok = [o.result for o in outcomes] == [{"echo": "/a"}, {"echo": "/b"}, {"echo": "/c"}]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
