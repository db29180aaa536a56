"""A ground-truth gRPC server (grpcio, HTTP/2 cleartext) with Triton's streaming
method: one request, then N response messages on a schedule set on the command
line. Messages are opaque bytes: the agent counts them, it does not decode them.

usage: python grpc_server.py TOKENS TTFT_MS GAP_MS   (prints "listening PORT")
       python grpc_server.py --call PORT MODEL      (a client: prints the messages received)
"""
import sys
import time
from concurrent import futures

import grpc

METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"


def serve(tokens, ttft_ms, gap_ms):
    def stream(request, context):
        time.sleep(ttft_ms / 1000)
        for i in range(tokens):
            if i:
                time.sleep(gap_ms / 1000)
            yield f"token {i}".encode()

    handler = grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelStreamInfer": grpc.unary_stream_rpc_method_handler(stream),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    server.wait_for_termination()


def call(port, model):
    # ModelInferRequest: model_name is field 1 (tag 0x0a), a length-delimited string.
    name = model.encode()
    request = b"\x0a" + bytes([len(name)]) + name
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        responses = list(channel.unary_stream(METHOD)(request))
    print(len(responses), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--call":
        call(int(sys.argv[2]), sys.argv[3])
    else:
        serve(*map(int, sys.argv[1:4]))
