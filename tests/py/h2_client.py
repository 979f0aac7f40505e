"""An HTTP/2 client for the end-to-end tests: httpx with h2, over one
connection (h2c with prior knowledge for http:// URLs, ALPN h2 over TLS for
https:// URLs, certificate not checked). POSTs BODY to each PATH, in turn or
all at once multiplexed (--parallel), reads each response whole, and prints
one JSON line per request: path, HTTP version, status, time to the response
head (ms), body bytes.

usage: h2_client.py [--wait-stdin] BASE_URL[,BASE_URL...] BODY [--parallel] PATH...

With several base URLs, the paths go to each in turn (one connection each).
--wait-stdin: the client is ready (imports done, so libssl mapped) and waits
for a line on standard input before it connects, so that an agent can attach
to it first.
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
    args = sys.argv[1:]
    if args[:1] == ["--wait-stdin"]:
        args = args[1:]
        print("ready", flush=True)
        sys.stdin.readline()
    bases, body, rest = args[0].split(","), args[1], args[2:]
    parallel = rest[:1] == ["--parallel"]
    paths = rest[1:] if parallel else rest
    limits = httpx.Limits(max_connections=1)
    for base in bases:
        async with httpx.AsyncClient(http1=False, http2=True, verify=False, limits=limits, timeout=30) as client:
            if parallel:
                results = await asyncio.gather(*(one(client, base, body, p) for p in paths))
            else:
                results = [await one(client, base, body, p) for p in paths]
        for r in results:
            print(json.dumps(r), flush=True)


asyncio.run(main())
