"""A ground-truth streaming server on the stack vLLM and SGLang use (Starlette
on uvicorn). It streams OpenAI-style chat completion chunks (SSE, /v1/chat/completions)
or Ollama-style messages (NDJSON, /api/chat) on a schedule the request sets, and prints, per request, exactly when each chunk went to the
socket (CLOCK_MONOTONIC, the clock of the kernel's timestamps), so that a test
can hold the agent's figures against it.

usage: python sse_server.py [--quiet] [--tls CERT KEY] [--port N]   (prints "listening PORT", then one
JSON line per request unless --quiet; --tls serves HTTPS through OpenSSL)
request body: {"model", "tokens": N, "ttft_ms", "gap_ms", "usage": bool}
"""
import asyncio
import json
import socket
import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route


async def chat(request: Request):
    req = await request.json()
    model, tokens = req["model"], req["tokens"]

    def event(payload):
        return f"data: {json.dumps(payload)}\n\n"

    def delta(d):
        return event({"object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": d}]})

    async def stream():
        # A role-only delta goes out at once, before any token exists.
        yield delta({"role": "assistant", "content": ""})
        await asyncio.sleep(req["ttft_ms"] / 1000)
        for i in range(tokens):
            if i:
                await asyncio.sleep(req["gap_ms"] / 1000)
            yield delta({"content": f"tok{i} "})
        if req.get("usage"):
            yield event({"model": model, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": tokens}})
        yield "data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


async def ollama_chat(request: Request):
    """Ollama's /api/chat: NDJSON, one message per token, then a summary with token counts."""
    req = await request.json()
    model, tokens = req["model"], req["tokens"]

    def line(payload):
        return json.dumps(payload) + "\n"

    async def stream():
        await asyncio.sleep(req["ttft_ms"] / 1000)
        for i in range(tokens):
            if i:
                await asyncio.sleep(req["gap_ms"] / 1000)
            yield line({"model": model, "message": {"role": "assistant", "content": f"tok{i} "}, "done": False})
        yield line({"model": model, "message": {"role": "assistant", "content": ""}, "done": True,
                    "eval_count": tokens, "prompt_eval_count": 11})

    return StreamingResponse(stream(), media_type="application/x-ndjson")


def timed(app):
    """ASGI middleware: when each response message was handed to the socket."""

    async def wrapper(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        sends = []

        async def timed_send(message):
            before = time.monotonic_ns()
            await send(message)
            sends.append((message["type"], bool(message.get("body")), before, time.monotonic_ns()))

        await app(scope, receive, timed_send)
        if QUIET:
            return
        bodies = [[b, a] for kind, has_body, b, a in sends if kind == "http.response.body" and has_body]
        record = {"path": scope["path"], "body_sends": bodies, "last_send": list(sends[-1][2:])}
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()

    return wrapper


QUIET = "--quiet" in sys.argv
app = timed(Starlette(routes=[
    Route("/v1/chat/completions", chat, methods=["POST"]),
    Route("/api/chat", ollama_chat, methods=["POST"]),
]))

if __name__ == "__main__":
    sock = socket.socket()
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(f"listening {sock.getsockname()[1]}", flush=True)
    tls = {}
    if "--tls" in sys.argv:
        cert, key = sys.argv[sys.argv.index("--tls") + 1:][:2]
        tls = {"ssl_certfile": cert, "ssl_keyfile": key}
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", **tls)).run(sockets=[sock])
