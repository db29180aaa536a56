"""An assistant's side of `inferscope mcp`, through the official MCP Python
SDK (PyPI `mcp`): starts the server over stdio, initialises, lists the tools
and prints them as one JSON line, then calls a tool for each JSON line read
on standard input ({"tool": NAME, "arguments": {...}}) and prints the answer
as one JSON line ({"tool", "is_error", "text"}; an MCP error as
{"tool", "error"}). Standard input closing ends
the session, which ends the server.

Usage: mcp_client.py AGENT ARGS...   (the server's stderr is this script's)
"""

import json
import sys

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError


def say(value):
    print(json.dumps(value), flush=True)


async def main():
    server = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:])
    async with stdio_client(server) as (read, write):
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
