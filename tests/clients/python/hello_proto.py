"""Loads tests/clients/proto/hello.proto at runtime (grpcio-tools), no generated code committed."""

import os
import sys

PROTO_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"))


def load():
    """Returns (protos, services) modules for hello.proto."""
    if PROTO_DIR not in sys.path:
        sys.path.insert(0, PROTO_DIR)
    import grpc  # noqa: PLC0415  (imported late so callers can set env vars first)

    return grpc.protos_and_services("hello.proto")
