"""An HTTPS mock provider that counts, independently of the agent, both what
crosses the wire (TLS records and handshakes) and the plaintext HTTP bytes.

Usage: tls_counting_provider.py CERT KEY COUNTS_FILE. It listens on
127.0.0.1 (a free port, printed as "port N" on stdout), serves HTTP/1.1 over
TLS through memory BIOs (so every wire byte passes through this program's own
counters), answers every request with an OpenAI chat completion whose usage is
fixed (input 12, output 34) and keeps connections alive. It never sends a
close_notify: when the peer closes, it closes too, so each byte it writes is a
byte the peer reads. After every connection ends it rewrites COUNTS_FILE as
JSON: connections, requests, wire_in, wire_out, plain_in, plain_out.
"""
import json
import os
import socket
import ssl
import sys
import threading

RESPONSE_BODY = json.dumps(
    {
        "id": "chatcmpl-tls",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46},
    }
).encode()

lock = threading.Lock()
counts = {"connections": 0, "requests": 0, "wire_in": 0, "wire_out": 0, "plain_in": 0, "plain_out": 0}


def add(**deltas):
    with lock:
        for key, value in deltas.items():
            counts[key] += value


def save(path):
    with lock:
        text = json.dumps(counts)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Tls:
    """One TLS session over a socket, with memory BIOs and byte counts."""

    def __init__(self, context, sock):
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)

    def flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)
            add(wire_out=len(data))

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            return False
        add(wire_in=len(data))
        self.incoming.write(data)
        return True

    def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                self.flush()
                return True
            except ssl.SSLWantReadError:
                self.flush()
                if not self.fill():
                    return False

    def read(self):
        """Plaintext bytes, or b"" at the end of the stream."""
        while True:
            try:
                data = self.obj.read(65536)
                self.flush()
                add(plain_in=len(data))
                return data
            except ssl.SSLWantReadError:
                self.flush()
                if not self.fill():
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def write(self, data):
        self.obj.write(data)
        add(plain_out=len(data))
        self.flush()


def serve(context, sock, counts_path):
    tls = Tls(context, sock)
    try:
        if not tls.handshake():
            return
        buffered = b""
        while True:
            while b"\r\n\r\n" not in buffered:
                data = tls.read()
                if not data:
                    return
                buffered += data
            head, _, buffered = buffered.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(buffered) < length:
                data = tls.read()
                if not data:
                    return
                buffered += data
            buffered = buffered[length:]
            add(requests=1)
            tls.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(RESPONSE_BODY)).encode()
                + b"\r\n\r\n"
                + RESPONSE_BODY
            )
    except OSError:
        pass
    finally:
        sock.close()
        add(connections=1)
        save(counts_path)


def main():
    cert, key, counts_path = sys.argv[1:4]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    save(counts_path)
    print(f"port {listener.getsockname()[1]}", flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(context, sock, counts_path), daemon=True).start()


if __name__ == "__main__":
    main()
