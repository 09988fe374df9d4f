"""A small HTTP/1.1 load generator (asyncio, keep-alive) for 127.0.0.1 load tests and benchmarks.

Light on purpose: on a two-core machine the client shares the CPU with the server it measures,
so it sends pre-encoded requests over persistent connections and parses only status,
Content-Length and body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """One answered request: which, its status, its latency and its body."""

    index: int
    status: int
    seconds: float
    body: bytes


def encode_post(
    host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None
):
    """A complete HTTP/1.1 POST request with a JSON body, as bytes."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    length = 0
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run_load(
    host: str,
    port: int,
    requests: Callable[[int], bytes],
    total: int,
    concurrency: int,
    timeout: float = 30.0,
) -> list[Reply]:
    """Send `total` requests over `concurrency` keep-alive connections; a failure is status 0.

    Args:
        requests: `i -> encoded request bytes` (see `encode_post`).
    """
    counter = iter(range(total))
    replies: list[Reply] = []

    async def worker() -> None:
        reader = writer = None
        for i in counter:
            start = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(requests(i))
                status, body = await asyncio.wait_for(_read_reply(reader), timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                status, body = 0, repr(exc).encode()
                if writer is not None:
                    writer.close()
                reader = writer = None
            replies.append(Reply(i, status, time.perf_counter() - start, body))
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return replies


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]
