#!/usr/bin/env python3
"""Proxyless gRPC client for Capstan end-to-end tests.

Calls capstan.test.hello.Greeter/SayHello on TARGET a number of times and prints a JSON
summary on stdout: which backend answered each call and the status codes.

  xds_client.py --target xds:///echo.default.svc:8080 --calls 10 [--bootstrap FILE]

For xds:/// targets gRPC reads the bootstrap from GRPC_XDS_BOOTSTRAP (or --bootstrap,
which sets it) and asks the xDS server named there for listeners/routes/clusters/endpoints.
Plain targets (127.0.0.1:PORT) work too. Exit status: 0 when the summary was printed and
(with --require-ok) every call succeeded; 1 otherwise.
"""

import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="xds:///some.host:1234")
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=5.0, help="deadline per call, seconds")
    ap.add_argument("--bootstrap", help="path of the xDS bootstrap JSON (sets GRPC_XDS_BOOTSTRAP)")
    ap.add_argument("--name", default="capstan-python-client", help="sent in HelloRequest.name")
    ap.add_argument("--wait-for-ready", action="store_true", help="queue calls until the channel is ready")
    ap.add_argument("--require-ok", action="store_true", help="exit 1 unless every call returned OK")
    args = ap.parse_args()
    if args.calls < 0 or args.calls > 100000:
        ap.error("--calls must be within 0..100000")
    if args.bootstrap:
        os.environ["GRPC_XDS_BOOTSTRAP"] = os.path.abspath(args.bootstrap)

    import grpc

    import hello_proto

    protos, services = hello_proto.load()
    results = []
    started = time.monotonic()
    with grpc.insecure_channel(args.target) as channel:
        stub = services.GreeterStub(channel)
        for i in range(args.calls):
            t0 = time.monotonic()
            entry = {"call": i}
            try:
                reply = stub.SayHello(
                    protos.HelloRequest(name=args.name),
                    timeout=args.timeout,
                    wait_for_ready=args.wait_for_ready,
                )
                entry.update(code="OK", backend=reply.backend, message=reply.message)
            except grpc.RpcError as err:
                entry.update(code=err.code().name, backend=None, details=err.details())
            entry["millis"] = round((time.monotonic() - t0) * 1000, 1)
            results.append(entry)

    by_backend, by_code = {}, {}
    for r in results:
        by_code[r["code"]] = by_code.get(r["code"], 0) + 1
        if r["backend"] is not None:
            by_backend[r["backend"]] = by_backend.get(r["backend"], 0) + 1
    summary = {
        "client": "python",
        "grpc_version": grpc.__version__,
        "target": args.target,
        "bootstrap": os.environ.get("GRPC_XDS_BOOTSTRAP"),
        "calls": args.calls,
        "ok": by_code.get("OK", 0),
        "by_code": by_code,
        "by_backend": by_backend,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        "results": results,
    }
    print(json.dumps(summary, sort_keys=True), flush=True)
    if args.require_ok and by_code.get("OK", 0) != args.calls:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
