"""A Python LLM gateway as people write them: an ASGI app on uvicorn with
uvloop, forwarding every request to an HTTPS provider with httpx (the ssl
module, memory BIOs) and streaming the answer back as it arrives, raw
(compressed bodies stay compressed).

Usage: python gateway.py LISTEN_PORT PROVIDER_HOST PROVIDER_PORT
"""
import sys

import httpx
import uvicorn

listen_port, host, port = int(sys.argv[1]), sys.argv[2], sys.argv[3]
client = httpx.AsyncClient(base_url=f"https://{host}:{port}", verify=False, timeout=60)
FORWARDED = (b"content-type", b"authorization", b"x-request-id", b"accept-encoding")
RETURNED = ("content-type", "content-encoding", "x-request-id")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.lower() in FORWARDED}
    path = scope["path"]
    if scope["query_string"]:
        path += "?" + scope["query_string"].decode()
    request = client.build_request(scope["method"], path, content=bytes(body), headers=headers)
    response = await client.send(request, stream=True)
    out = [(k.encode(), v.encode()) for k, v in response.headers.items() if k in RETURNED]
    await send({"type": "http.response.start", "status": response.status_code, "headers": out})
    async for chunk in response.aiter_raw():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await response.aclose()
    await send({"type": "http.response.body", "body": b""})


uvicorn.run(app, host="127.0.0.1", port=listen_port, loop="uvloop", log_level="warning")
