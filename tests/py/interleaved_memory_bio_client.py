"""A TLS client that drives several connections through Python's ssl memory
BIOs in the order an event loop does at its worst, on one thread: every
readable socket is read before any ciphertext is fed to OpenSSL, the SSL
objects are then driven in the reverse order of their sockets, and a new
connection's handshake starts between the first connection's socket read and
its decryption. The agent must still tie each SSL object to its own socket.

Usage: python3 interleaved_memory_bio_client.py HOST PORT CONNECTIONS ROUNDS [split]
Waits for a line on stdin, then sends ROUNDS POSTs to /v1/chat/completions on
each connection (x-request-id m{connection}-{round}) and prints "done N B", N
being the number of 200 answers and B the plaintext bytes the SSL objects
wrote and read. With `split`, every ciphertext flight goes out in two socket
writes, its first byte alone: no socket write begins with a TLS record, so
no SSL object can be tied to its socket by the records it wrote. The server's certificate is not verified
(the tests' own, self-signed).
"""
import select
import socket
import ssl
import sys

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'


class Connection:
    def __init__(self, context, host, port, index, split):
        self.index = index
        self.split = split
        self.plaintext_bytes = 0  # written and read through the SSL object
        self.sock = socket.create_connection((host, port))
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=None)
        self.unfed = b""  # ciphertext read from the socket, not yet given to OpenSSL
        self.plaintext = b""
        self.handshaken = False

    def send_pending(self):
        data = self.outgoing.read()
        if data and self.split:
            self.sock.sendall(data[:1])
            data = data[1:]
        if data:
            self.sock.sendall(data)

    def read_socket(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"connection {self.index} closed by the server")
        self.unfed += data

    def feed(self):
        if self.unfed:
            self.incoming.write(self.unfed)
        self.unfed = b""

    def step_handshake(self):
        try:
            self.tls.do_handshake()
            self.handshaken = True
        except ssl.SSLWantReadError:
            pass
        self.send_pending()

    def decrypt(self):
        while True:
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            if not data:
                break
            self.plaintext += data
            self.plaintext_bytes += len(data)
        self.send_pending()

    def response_complete(self):
        head, sep, body = self.plaintext.partition(b"\r\n\r\n")
        if not sep:
            return None
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            end = body.find(b"0\r\n\r\n")
            if end < 0:
                return None
            length = end + 5
        else:
            length = 0
            for line in lower.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(body) < length:
                return None
        self.plaintext = body[length:]
        return head.split(b"\r\n", 1)[0]


def read_all_readable(connections):
    """Reads every readable socket first (as an event loop's poll does)."""
    ready, _, _ = select.select([c.sock for c in connections], [], [], 10)
    if not ready:
        raise TimeoutError("no answer in 10 s")
    for c in connections:
        if c.sock in ready:
            c.read_socket()


def main():
    host, port, count, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    split = sys.argv[5:] == ["split"]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sys.stdin.readline()
    connections = [Connection(context, host, port, i, split) for i in range(count)]
    # Every handshake but the last starts; the first connection's answer is
    # read from its socket; only then does the last handshake start.
    for c in connections[:-1]:
        c.step_handshake()
    while not connections[0].unfed:
        read_all_readable(connections[:1])
    connections[-1].step_handshake()
    while not all(c.handshaken for c in connections):
        read_all_readable([c for c in connections if not c.handshaken])
        for c in reversed(connections):
            if c.unfed and not c.handshaken:
                c.feed()
                c.step_handshake()
    ok = 0
    for r in range(rounds):
        for c in connections:
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nhost: api.openai.com\r\ncontent-type: application/json\r\n"
                f"x-request-id: m{c.index}-{r}\r\ncontent-length: {len(BODY)}\r\n\r\n"
            )
            c.plaintext_bytes += c.tls.write(head.encode() + BODY)
            c.send_pending()
        waiting = list(connections)
        while waiting:
            read_all_readable(waiting)
            for c in reversed(waiting):
                c.feed()
                c.decrypt()
                status = c.response_complete()
                if status is not None:
                    ok += b" 200 " in status
                    waiting.remove(c)
    print(f"done {ok} {sum(c.plaintext_bytes for c in connections)}", flush=True)
    for c in connections:
        c.sock.close()
    return ok == count * rounds


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
