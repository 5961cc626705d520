"""The open-loop webhook sender of ``bench_ingest.py``: its own process, standard library only.

Run by ``bench_ingest.py`` (``python benchmarks/ingest_sender.py JOB OUT``): ``JOB`` is a JSON file
``{"host", "port", "path", "headers", "rate", "t0", "bodies", "part", "parts", "timeout"}``. Every
request is serialised up front (request line, headers, ``Connection: close``, body: bytes). Request
``n`` is due at ``t0 + n / rate`` (``t0`` on ``time.monotonic()``, which is the system-wide
CLOCK_MONOTONIC on Linux, so the parent and its senders share one clock); this process sends the
requests ``n`` with ``n % parts == part``. One asyncio loop opens a new TCP connection per request
(as Label Studio does), writes the bytes, reads the status line, the headers and ``Content-Length``
bytes of body, and closes. Nothing waits for an earlier answer (open loop), so a slow server
shows up as latency, never as a lower rate.

``OUT`` gets ``{"results": [[n, due, start, end, outcome], ...], "cpu_s": seconds}``: ``start`` is
when the connection was opened (``start - due`` is the sender's own lateness), ``end`` when the
whole answer was read, ``outcome`` the HTTP status (an int) or the name of the exception;
``cpu_s`` is this process's CPU time.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any


def serialise(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """One HTTP/1.1 POST with ``Connection: close``, as bytes."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}",
             "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _one(host: str, port: int, request: bytes, timeout: float) -> int | str:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, _, rest = head.decode("latin-1").partition("\r\n")
        status = int(status_line.split()[1])
        length = 0
        for line in rest.split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length:
            await asyncio.wait_for(reader.readexactly(length), timeout)
        return status
    finally:
        writer.close()


async def send_all(job: dict[str, Any]) -> list[list[Any]]:
    host, port, rate, t0 = job["host"], int(job["port"]), float(job["rate"]), float(job["t0"])
    part, parts, timeout = int(job.get("part", 0)), int(job.get("parts", 1)), float(job.get("timeout", 10.0))
    mine = range(part, len(job["bodies"]), parts)
    requests = {n: serialise(host, port, job["path"], job["headers"], job["bodies"][n].encode()) for n in mine}
    results: list[list[Any]] = []

    async def one(n: int, due: float) -> None:
        start = time.monotonic()
        try:
            outcome: int | str = await _one(host, port, requests[n], timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                IndexError) as exc:
            outcome = type(exc).__name__
        results.append([n, due, start, time.monotonic(), outcome])

    tasks = []
    for n in mine:
        due = t0 + n / rate
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(n, due)))
    await asyncio.gather(*tasks)
    return results


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: ingest_sender.py JOB.json OUT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    gc.disable()  # everything is allocated up front; no collector pause in the middle of the burst
    cpu0 = time.process_time()
    results = asyncio.run(send_all(job))
    cpu = time.process_time() - cpu0
    Path(argv[1]).write_text(json.dumps({"results": results, "cpu_s": cpu}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
