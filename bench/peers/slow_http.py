"""A local HTTP server that answers every request after a fixed wait, for the I/O-bound
benchmark (bench/io_bound.py): ``python bench/peers/slow_http.py PORT [WAIT_SECONDS]``.
HTTP/1.1 with keep-alive, on asyncio, standard library only; prints "ready" once listening."""

import asyncio
import sys

BODY = b"ok"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


async def serve(port: int, wait: float) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                # No request of the benchmark has a body; a Content-Length would be read here.
                await asyncio.sleep(wait)
                writer.write(RESPONSE)
                await writer.drain()
                if b"connection: close" in head.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.2))
