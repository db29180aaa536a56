"""A Grafana Pyroscope push endpoint for the tests, decoding what it receives
with decoders of its own: pprof's published profile.proto (from Debian's
golang-github-google-pprof-dev, in the fixtures) and the push API's messages
as Pyroscope's api/push/v1 declares them, both compiled here by protoc
(grpcio-tools), never inferscope's types.

Usage: pyroscope.py PROFILE_PROTO_DIR [--fail-first N]
Prints `listening PORT`, then one JSON object per line per series received:
its labels, the request's tenant and authorization headers, and its profile
decoded (sample and period types, and each sample's frames, root first, with
its values). The first N pushes are answered 503 (a server that is down).
"""

import gzip
import json
import os
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from grpc_tools import protoc

# Pyroscope's push.v1.PushRequest and types.v1.LabelPair, field for field.
PUSH_PROTO = """
syntax = "proto3";
package push.v1;
message LabelPair { string name = 1; string value = 2; }
message RawSample { bytes raw_profile = 1; string ID = 2; }
message RawProfileSeries { repeated LabelPair labels = 1; repeated RawSample samples = 2; }
message PushRequest { repeated RawProfileSeries series = 1; }
"""

PUSH_PATH = "/push.v1.PusherService/Push"


def compile_protos(pprof_dir):
    out = tempfile.mkdtemp(prefix="pyroscope-receiver-")
    with open(os.path.join(out, "push.proto"), "w") as f:
        f.write(PUSH_PROTO)
    args = ["protoc", f"-I{pprof_dir}", f"-I{out}", f"--python_out={out}", "profile.proto", "push.proto"]
    if protoc.main(args) != 0:
        sys.exit(f"protoc failed on {pprof_dir}/profile.proto")
    sys.path.insert(0, out)
    import profile_pb2
    import push_pb2

    return profile_pb2, push_pb2


def decode_profile(profile_pb2, raw):
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    p = profile_pb2.Profile.FromString(raw)
    s = p.string_table
    functions = {f.id: s[f.name] for f in p.function}
    locations = {l.id: [functions[line.function_id] for line in l.line] for l in p.location}
    stacks = []
    for sample in p.sample:
        frames = []
        # Leaf first in pprof; inlined lines innermost first within a location.
        for location in reversed(sample.location_id):
            frames.extend(reversed(locations[location]))
        stacks.append({"frames": frames, "values": list(sample.value)})
    return {
        "sample_types": [[s[t.type], s[t.unit]] for t in p.sample_type],
        "period_type": [s[p.period_type.type], s[p.period_type.unit]],
        "period": p.period,
        "time_nanos": p.time_nanos,
        "duration_nanos": p.duration_nanos,
        "stacks": stacks,
    }


def main():
    pprof_dir = sys.argv[1]
    fail_first = int(sys.argv[sys.argv.index("--fail-first") + 1]) if "--fail-first" in sys.argv else 0
    profile_pb2, push_pb2 = compile_protos(pprof_dir)
    state = {"pushes": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state["pushes"] += 1
            if self.path != PUSH_PATH or self.headers.get("Content-Type") != "application/proto":
                return self.answer(404 if self.path != PUSH_PATH else 415)
            if state["pushes"] <= fail_first:
                return self.answer(503)
            request = push_pb2.PushRequest.FromString(body)
            for series in request.series:
                for sample in series.samples:
                    line = {
                        "push": state["pushes"],
                        "tenant": self.headers.get("X-Scope-OrgID"),
                        "authorization": self.headers.get("Authorization"),
                        "labels": {l.name: l.value for l in series.labels},
                        "profile": decode_profile(profile_pb2, sample.raw_profile),
                    }
                    print(json.dumps(line), flush=True)
            self.answer(200)

        def answer(self, status):
            self.send_response(status)
            self.send_header("Content-Type", "application/proto")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
