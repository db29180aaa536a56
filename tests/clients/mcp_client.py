"""An assistant's side of `inferscope mcp`, through the official MCP Python
SDK (PyPI `mcp`): connects, initialises, lists the tools and prints them as
one JSON line, then calls a tool for each JSON line read on standard input
({"tool": NAME, "arguments": {...}}) and prints the answer as one JSON line
({"tool", "is_error", "text"}; an MCP error as {"tool", "error"}). Standard
input closing ends the session.

Usage: mcp_client.py stdio AGENT ARGS...   (starts the server; its stderr is this script's)
       mcp_client.py http URL [TOKEN]      (a bearer token, when the server wants one)
"""

import contextlib
import json
import sys

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError


def say(value):
    print(json.dumps(value), flush=True)


@contextlib.asynccontextmanager
async def connected(argv):
    if argv[0] == "stdio":
        async with stdio_client(StdioServerParameters(command=argv[1], args=argv[2:])) as (read, write):
            yield read, write
    else:
        headers = {"Authorization": f"Bearer {argv[2]}"} if len(argv) > 2 else None
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(argv[1], http_client=http) as (read, write):
                yield read, write


async def main():
    async with connected(sys.argv[1:]) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            listed = await session.list_tools()
            say(
                {
                    "server": init.server_info.name,
                    "tools": [
                        {
                            "name": t.name,
                            "description": t.description,
                            "input_schema": t.input_schema,
                            "read_only": bool(t.annotations and t.annotations.read_only_hint),
                        }
                        for t in listed.tools
                    ],
                }
            )
            while line := await anyio.to_thread.run_sync(sys.stdin.readline):
                call = json.loads(line)
                try:
                    result = await session.call_tool(call["tool"], call.get("arguments", {}))
                except MCPError as e:
                    say({"tool": call["tool"], "error": str(e), "text": ""})
                    continue
                text = "".join(c.text for c in result.content if c.type == "text")
                say({"tool": call["tool"], "is_error": result.is_error, "text": text})


anyio.run(main)
