"""Sends requests through the official `openai` and `anthropic` clients, as
agent frameworks and coding tools send them, and prints each request's own
view as one JSON line: when it was sent and when its first token arrived (the
agent's clock, CLOCK_MONOTONIC), and the tokens the server's usage reported.
Nothing of the answers' text is printed.

Each API is asked three times: streamed, whole, streamed again. A client's
first streamed call loads its streaming code (~0.8 s here) between taking its
clock and sending: only the second one's first-token time is the request's
("timed").

usage: api_clients.py BASE_URL MODEL
"""

import json
import sys
import time

import anthropic
import openai

base, model = sys.argv[1], sys.argv[2]
PROMPT = "Name three colours."
MAX_TOKENS = 24
# llama-server closes each connection after its response although it offers
# keep-alive: a client that reuses one finds it closed. Each request asks for
# its own connection instead.
ONE_CONNECTION_EACH = {"Connection": "close"}


def now_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def report(api, stream, timed, sent, first, output_tokens, input_tokens):
    print(json.dumps({"api": api, "stream": stream, "timed": timed, "sent_ns": sent,
                      "first_token_ns": first, "output_tokens": output_tokens,
                      "input_tokens": input_tokens}), flush=True)


oa = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0,
                   default_headers=ONE_CONNECTION_EACH)


def responses_streamed(timed):
    """The Responses API, streamed: the first token is the first output-text delta."""
    sent, first, usage = now_ns(), None, None
    with oa.responses.create(model=model, input=PROMPT, max_output_tokens=MAX_TOKENS,
                             temperature=0, stream=True) as events:
        for event in events:
            if first is None and event.type.endswith(".delta") and event.delta:
                first = now_ns()
            if event.type == "response.completed":
                usage = event.response.usage
    report("responses", True, timed, sent, first, usage.output_tokens, usage.input_tokens)


def responses_whole():
    sent = now_ns()
    whole = oa.responses.create(model=model, input=PROMPT, max_output_tokens=MAX_TOKENS,
                                temperature=0)
    report("responses", False, False, sent, None, whole.usage.output_tokens,
           whole.usage.input_tokens)


an = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0,
                         default_headers=ONE_CONNECTION_EACH)
MESSAGES = [{"role": "user", "content": PROMPT}]


def messages_streamed(timed):
    """The Messages API, streamed: the first token is the first content block delta."""
    sent, first, output_tokens, input_tokens = now_ns(), None, None, None
    with an.messages.create(model=model, max_tokens=MAX_TOKENS, messages=MESSAGES,
                            stream=True) as events:
        for event in events:
            if event.type == "message_start":
                input_tokens = event.message.usage.input_tokens
            elif event.type == "content_block_delta" and first is None:
                first = now_ns()
            elif event.type == "message_delta":
                output_tokens = event.usage.output_tokens
    report("messages", True, timed, sent, first, output_tokens, input_tokens)


def messages_whole():
    sent = now_ns()
    whole = an.messages.create(model=model, max_tokens=MAX_TOKENS, messages=MESSAGES)
    report("messages", False, False, sent, None, whole.usage.output_tokens,
           whole.usage.input_tokens)


responses_streamed(timed=False)
responses_whole()
responses_streamed(timed=True)
messages_streamed(timed=False)
messages_whole()
messages_streamed(timed=True)
