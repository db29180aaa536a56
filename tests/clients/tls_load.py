"""HTTPS load on a TLS event-loop server, shaped as agents and proxies send it:
keep-alive connections streaming requests concurrently, while other
connections are opened for one request and closed in between. Prints one line,
how many requests got a complete answer ({"answered": N}).

usage: tls_load.py PORT KEEP_ALIVE_CONNECTIONS REQUESTS_EACH ONE_SHOT_CONNECTIONS
"""

import http.client
import json
import ssl
import sys
import threading

port, keep_alive, each, one_shot = (int(a) for a in sys.argv[1:5])
BODY = json.dumps({"model": "tls-load", "tokens": 4, "ttft_ms": 5, "gap_ms": 2, "stream": True})
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
answered = 0
lock = threading.Lock()


def request(conn):
    global answered
    conn.request("POST", "/v1/chat/completions", BODY, {"Content-Type": "application/json"})
    text = conn.getresponse().read()
    if b"[DONE]" in text:
        with lock:
            answered += 1


def keep_alive_client():
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context)
    for _ in range(each):
        request(conn)
    conn.close()


def one_shot_client():
    for _ in range(one_shot):
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context)
        request(conn)
        conn.close()


threads = [threading.Thread(target=keep_alive_client) for _ in range(keep_alive)]
threads.append(threading.Thread(target=one_shot_client))
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"answered": answered}), flush=True)
