"""An HTTP/2 client for the end-to-end tests: httpx with h2, over one
connection (h2c with prior knowledge for http:// URLs, ALPN h2 over TLS for
https:// URLs, certificate not checked). POSTs BODY to each PATH, in turn or
all at once multiplexed (--parallel), reads each response whole, and prints
one JSON line per request: path, HTTP version, status, time to the response
head (ms), body bytes.

usage: h2_client.py BASE_URL BODY [--parallel] PATH...
"""

import asyncio
import json
import sys
import time

import httpx


async def one(client, base, body, path):
    start = time.monotonic()
    headers = {"content-type": "application/json"}
    async with client.stream("POST", base + path, content=body.encode(), headers=headers) as response:
        ttfb_ms = (time.monotonic() - start) * 1000.0
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
        return {
            "path": path,
            "http_version": response.http_version,
            "status": response.status_code,
            "ttfb_ms": ttfb_ms,
            "bytes": size,
        }


async def main():
    base, body, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    parallel = rest[:1] == ["--parallel"]
    paths = rest[1:] if parallel else rest
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(http1=False, http2=True, verify=False, limits=limits, timeout=30) as client:
        if parallel:
            results = await asyncio.gather(*(one(client, base, body, p) for p in paths))
        else:
            results = [await one(client, base, body, p) for p in paths]
    for r in results:
        print(json.dumps(r), flush=True)


asyncio.run(main())
