#!/usr/bin/env python3
"""A tiny gRPC backend (capstan.test.hello.Greeter) that replies with its own name.

Usage: backend.py --name b1 [--host 127.0.0.1] [--port 0]
Prints one line `LISTENING <host>:<port>` on stdout once it serves, then runs until
SIGTERM/SIGINT (or --max-seconds elapses, default 600, so it never outlives a test run).
"""

import argparse
import signal
import sys
import threading
from concurrent import futures

import hello_proto


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="backend name returned in every reply")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="exit after this long")
    args = ap.parse_args()

    import grpc

    protos, services = hello_proto.load()

    class Greeter(services.GreeterServicer):
        def SayHello(self, request, context):  # noqa: N802 (gRPC method name)
            return protos.HelloReply(message=f"hello {request.name} from {args.name}", backend=args.name)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    services.add_GreeterServicer_to_server(Greeter(), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        print(f"cannot bind {args.host}:{args.port}", file=sys.stderr)
        return 2
    server.start()
    print(f"LISTENING {args.host}:{port}", flush=True)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait(args.max_seconds)
    server.stop(grace=1).wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
