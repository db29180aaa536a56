"""An HTTPS event loop that receives from every ready connection before it
decrypts any, and streams its answers a token at a time to every connection
in turn: OpenSSL on memory BIOs, like asyncio's, but in the order that defeats
tying an SSL object to "the socket its thread received from last". The bytes
fed to each SSL object are the very buffer its socket was read into, as in
asyncio and uvloop.

usage: python tls_batch_server.py CERT KEY   (prints "listening PORT")
request: POST /v1/chat/completions with {"model", "tokens": N}; answered with
SSE chat chunks, one token per round, then [DONE]; keep-alive.
"""
import json
import select
import socket
import ssl
import sys
import time

cert, key = sys.argv[1:3]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
ROUND_S = 0.003


def chunk(payload):
    data = payload.encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(model, delta):
    return chunk("data: " + json.dumps({"object": "chat.completion.chunk", "model": model,
                                        "choices": [{"index": 0, "delta": delta}]}) + "\n\n")


class Connection:
    def __init__(self, sock):
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.buffer = memoryview(bytearray(65536))
        self.received = 0
        self.handshaken = False
        self.plain = b""
        self.pending = []  # the answer's parts still to send, one per round

    def receive(self):
        """Phase one: the socket's bytes into this connection's own buffer."""
        try:
            self.received = self.sock.recv_into(self.buffer)
        except OSError:
            return False
        return self.received > 0

    def decrypt(self):
        """Phase two: that very buffer into the SSL object, and what it yields."""
        self.incoming.write(self.buffer[:self.received])
        if not self.handshaken:
            try:
                self.tls.do_handshake()
                self.handshaken = True
            except ssl.SSLWantReadError:
                pass
        if self.handshaken:
            try:
                while True:
                    self.plain += self.tls.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                pass
        self.flush()
        self.answer_requests()

    def answer_requests(self):
        while b"\r\n\r\n" in self.plain:
            head, rest = self.plain.split(b"\r\n\r\n", 1)
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(rest) < length:
                return
            body, self.plain = json.loads(rest[:length]), rest[length:]
            model = body["model"]
            self.pending.append(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n" +
                                event(model, {"role": "assistant", "content": ""}))
            self.pending += [event(model, {"content": f"tok{i} "}) for i in range(body["tokens"])]
            self.pending.append(chunk("data: [DONE]\n\n") + b"0\r\n\r\n")

    def send_next(self):
        if self.pending:
            self.tls.write(self.pending.pop(0))
            self.flush()

    def flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)


listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(128)
print(f"listening {listener.getsockname()[1]}", flush=True)
connections = {}
while True:
    streaming = any(c.pending for c in connections.values())
    ready, _, _ = select.select([listener, *connections], [], [], ROUND_S if streaming else None)
    if ready:
        # Let more connections become ready: a batch of them, as under load.
        time.sleep(ROUND_S)
        ready, _, _ = select.select([listener, *connections], [], [], 0)
    if listener in ready:
        sock, _ = listener.accept()
        connections[sock] = Connection(sock)
    batch = []
    for sock in ready:
        if sock is listener:
            continue
        c = connections[sock]
        if c.receive():
            batch.append(c)
        else:
            sock.close()
            del connections[sock]
    for c in batch:
        c.decrypt()
    for c in connections.values():
        c.send_next()
