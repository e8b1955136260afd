"""Post status callbacks to a receiver as fast as it acknowledges them; print what it took.

``python bench/callback_load.py --url URL --count N --connections C --secret S`` opens C
keep-alive connections and posts N distinct Kaleyra v2 status callbacks (each a new event:
its own message id), one request at a time per connection, on a bare asyncio client. It still
spends 40 to 150 µs of CPU a request on this project's 2-core machine, CPU a receiver needs:
``delivery.py`` uses ``wrk`` with ``callback_load.lua`` instead when wrk is installed. Prints
one JSON line: ``{"acked": .., "other": .., "seconds": ..}`` (acked: answered 200).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

import orjson

_BODY = (
    b'{"meta_object":{"value":{"messaging_product":"whatsapp","statuses":[{"id":"wamid.B%d",'
    b'"status":"DELIVERED","timestamp":"1764000000","recipient_id":"9198%08d",'
    b'"conversation":{"id":"c%d","origin":{"type":"marketing"}},"pricing":{"billable":true,'
    b'"pricing_model":"CBP","category":"marketing"}}]},"field":"messages"},"extra_info":'
    b'{"message_id":"A%d","trace_id":"t","waba_id":"w","ref":"cust","ref1":"diwali"},'
    b'"status":"delivered","message_id":"wamid.B%d"}'
)


def bodies(count: int, start: int = 0) -> Iterator[bytes]:
    """``count`` distinct callbacks."""
    for n in range(start, start + count):
        yield _BODY % (n, n % 10**8, n, n, n)


async def _connection(
    host: str, port: int, path: str, secret: str, work: Iterator[bytes], counts: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-Callback-Secret: {secret}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    try:
        for body in work:
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            answer = await reader.readuntil(b"\r\n\r\n")
            status = int(answer[9:12])
            length = 0
            for line in answer.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            counts[0 if status == 200 else 1] += 1
    finally:
        writer.close()


async def load(url: str, count: int, connections: int, secret: str) -> tuple[int, int, float]:
    """(answered 200, answered otherwise, seconds) for ``count`` callbacks."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    work = bodies(count)
    counts = [0, 0]
    started = time.monotonic()
    await asyncio.gather(
        *(
            _connection(parts.hostname, parts.port, parts.path, secret, work, counts)
            for _ in range(connections)
        )
    )
    return counts[0], counts[1], time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load; print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8090/kaleyra/status")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop

        acked, other, seconds = uvloop.run(
            load(args.url, args.count, args.connections, args.secret)
        )
    except ImportError:  # pragma: no cover - uvloop is a dependency on CPython/Linux
        acked, other, seconds = asyncio.run(
            load(args.url, args.count, args.connections, args.secret)
        )
    print(orjson.dumps({"acked": acked, "other": other, "seconds": seconds}).decode())
    return 0 if acked == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
