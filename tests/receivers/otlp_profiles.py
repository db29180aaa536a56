"""An OTLP profiles receiver for the tests, over gRPC (ProfilesService/Export)
and HTTP/protobuf (POST /v1development/profiles), decoding what it receives
with the OpenTelemetry profiles protocol's published definitions (the
opentelemetry-proto repository's .proto files, in the fixtures) compiled here
by protoc (grpcio-tools), never inferscope's types.

Usage: otlp_profiles.py PROTO_DIR [--fail-first N]
Prints `listening HTTP_PORT GRPC_PORT`, then one JSON object per line per
profile received: the transport, the request's number, its authorization
header and (HTTP) content encoding, the resource's attributes, the scope, the sample and period types,
times, and each sample's frames (root first), values and attributes; and the
protocol rules the request broke ("violations"). The first N requests are
refused as a collector that is down refuses them (HTTP 503, gRPC UNAVAILABLE).
"""

import gzip
import json
import os
import sys
import tempfile
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from grpc_tools import protoc

PROTOS = [
    "opentelemetry/proto/common/v1/common.proto",
    "opentelemetry/proto/resource/v1/resource.proto",
    "opentelemetry/proto/profiles/v1development/profiles.proto",
    "opentelemetry/proto/collector/profiles/v1development/profiles_service.proto",
]
HTTP_PATH = "/v1development/profiles"


def compile_protos(proto_dir):
    out = tempfile.mkdtemp(prefix="otlp-profiles-receiver-")
    args = ["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}", *PROTOS]
    if protoc.main(args) != 0:
        sys.exit(f"protoc failed on {proto_dir}")
    # Ahead of any installed `opentelemetry` package.
    sys.path.insert(0, out)
    from opentelemetry.proto.collector.profiles.v1development import (
        profiles_service_pb2 as service,
        profiles_service_pb2_grpc as service_grpc,
    )

    return service, service_grpc


def any_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def violations_of(request):
    """What the request breaks of the protocol's rules on its dictionary."""
    d = request.dictionary
    found = []
    zero = {
        "mapping_table": d.mapping_table,
        "location_table": d.location_table,
        "function_table": d.function_table,
        "link_table": d.link_table,
        "attribute_table": d.attribute_table,
        "stack_table": d.stack_table,
    }
    for name, table in zero.items():
        if len(table) == 0 or table[0].ByteSize() != 0:
            found.append(f"{name}[0] is not the zero value")
    if len(d.string_table) == 0 or d.string_table[0] != "":
        found.append('string_table[0] is not ""')

    def within(name, index, table):
        if not 0 <= index < len(table):
            found.append(f"{name} {index} out of range")
            return False
        return True

    for rp in request.resource_profiles:
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                for s in p.samples:
                    if len(s.values) != 1 or s.timestamps_unix_nano:
                        found.append("a sample is not one aggregated value")
                    for a in s.attribute_indices:
                        within("attribute", a, d.attribute_table)
                    if within("stack", s.stack_index, d.stack_table):
                        for l in d.stack_table[s.stack_index].location_indices:
                            if within("location", l, d.location_table):
                                for line in d.location_table[l].lines:
                                    within("function", line.function_index, d.function_table)
    return found


def decode(request):
    """One JSON-ready object per profile of `request`."""
    d = request.dictionary
    s = d.string_table

    def frame(location_index):
        location = d.location_table[location_index]
        # Inlined functions first, their caller last.
        return [s[d.function_table[line.function_index].name_strindex] for line in reversed(location.lines)]

    def attributes(indices):
        return {s[d.attribute_table[i].key_strindex]: any_value(d.attribute_table[i].value) for i in indices}

    violations = violations_of(request)
    profiles = []
    for rp in request.resource_profiles:
        resource = {kv.key: any_value(kv.value) for kv in rp.resource.attributes}
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                samples = []
                for sample in p.samples:
                    frames = []
                    # Leaf first in a stack.
                    for location in reversed(d.stack_table[sample.stack_index].location_indices):
                        frames.extend(frame(location))
                    samples.append(
                        {
                            "frames": frames,
                            "values": list(sample.values),
                            "attributes": attributes(sample.attribute_indices),
                        }
                    )
                profiles.append(
                    {
                        "resource": resource,
                        "scope": sp.scope.name,
                        "sample_type": [s[p.sample_type.type_strindex], s[p.sample_type.unit_strindex]],
                        "period_type": [s[p.period_type.type_strindex], s[p.period_type.unit_strindex]],
                        "period": p.period,
                        "time_unix_nano": p.time_unix_nano,
                        "duration_nano": p.duration_nano,
                        "samples": samples,
                        "violations": violations,
                    }
                )
    return profiles


def main():
    proto_dir = sys.argv[1]
    fail_first = int(sys.argv[sys.argv.index("--fail-first") + 1]) if "--fail-first" in sys.argv else 0
    service, service_grpc = compile_protos(proto_dir)
    lock = threading.Lock()
    state = {"requests": 0}

    def received(transport, authorization, request, content_encoding=None):
        """Counts the request; returns False for one to refuse."""
        with lock:
            state["requests"] += 1
            number = state["requests"]
            if number <= fail_first:
                return False
            for profile in decode(request):
                profile.update(
                    transport=transport, request=number, authorization=authorization, content_encoding=content_encoding
                )
                print(json.dumps(profile), flush=True)
        return True

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != HTTP_PATH or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            encoding = self.headers.get("Content-Encoding")
            if encoding == "gzip":
                body = gzip.decompress(body)
            request = service.ExportProfilesServiceRequest.FromString(body)
            if not received("http", self.headers.get("Authorization"), request, encoding):
                self.send_response(503)
                self.end_headers()
                return
            answer = service.ExportProfilesServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    class Servicer(service_grpc.ProfilesServiceServicer):
        def Export(self, request, context):
            authorization = dict(context.invocation_metadata()).get("authorization")
            if not received("grpc", authorization, request):
                context.abort(grpc.StatusCode.UNAVAILABLE, "starting")
            return service.ExportProfilesServiceResponse()

    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_grpc.add_ProfilesServiceServicer_to_server(Servicer(), grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening {http_server.server_address[1]} {grpc_port}", flush=True)
    http_server.serve_forever()


if __name__ == "__main__":
    main()
