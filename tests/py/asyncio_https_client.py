"""An asyncio client (Python's ssl over memory BIOs, libssl loaded as a shared
library). After a first line on stdin it imports asyncio and ssl (which maps
libssl) and prints "ready", as programs that load TLS lazily do: the agent
must notice libssl arriving after it attached. After a second line it sends
COUNT keep-alive POSTs over one TLS connection to HOST:PORT/PATH, reads each
response by its Content-Length and prints "done COUNT". The server is the
tests' own, with a self-signed certificate, so it is not verified."""
import json
import sys


async def exchange(asyncio, ssl, host, port, count, path):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    done = 0
    for _ in range(count):
        head = (
            f"POST {path} HTTP/1.1\r\nhost: api.openai.com\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer sk-test-canary\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        if b" 200 " in status_line:
            done += 1
    print(f"done {done}", flush=True)
    writer.close()
    return done == count


def main():
    host, port, count, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    sys.stdin.readline()
    import asyncio
    import ssl

    print("ready", flush=True)
    sys.stdin.readline()
    return asyncio.run(exchange(asyncio, ssl, host, port, count, path))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
