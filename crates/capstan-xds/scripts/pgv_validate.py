"""Checks xDS resources against Envoy's protoc-gen-validate rules, which Envoy applies (and
NACKs on) before anything else. No Envoy binary can run on these machines; this is the check.

    python -m venv /tmp/pgv && /tmp/pgv/bin/pip install "protobuf<5" "xds-protos<1.64" \
        "grpcio<1.64" protoc-gen-validate
    CAPSTAN_PGV_DUMP=/tmp/xds cargo test -p capstan-xds --test gen_mtls dump_for_envoy_validation
    CAPSTAN_PGV_DUMP=/tmp/xds cargo test -p capstan-xds --test gen_authz dump_for_envoy_validation
    /tmp/pgv/bin/python crates/capstan-xds/scripts/pgv_validate.py /tmp/xds

The validator checks one message at a time and does not look inside `Any` fields, so every
`Any` met on the way (filter and transport socket `typed_config`s) is unpacked and checked too.
"""

import sys
from pathlib import Path

from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import Message
from protoc_gen_validate.validator import ValidationFailed, validate

# Register every message type the generators emit.
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.filters.http.cors.v3 import cors_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_authn_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2  # noqa: F401
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401

DB = symbol_database.Default()


def unpack(a):
    name = a.type_url.split("/")[-1]
    msg = DB.GetSymbol(name)()
    msg.ParseFromString(a.value)
    return msg


def check(msg, path, failures):
    try:
        validate(msg)
    except ValidationFailed as e:
        failures.append(f"{path} ({msg.DESCRIPTOR.full_name}): {e}")
    for field, value in msg.ListFields():
        values = value if field.label == field.LABEL_REPEATED else [value]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            values = [v for v in value.values()] if hasattr(value, "values") else []
        for i, v in enumerate(values):
            if not isinstance(v, Message):
                continue
            at = f"{path}.{field.name}[{i}]"
            if v.DESCRIPTOR.full_name == "google.protobuf.Any":
                try:
                    inner = unpack(v)
                except KeyError:
                    failures.append(f"{at}: unknown type {v.type_url} (import it here)")
                    continue
                check(inner, at, failures)
            else:
                check(v, at, failures)


def main(directory):
    failures, count = [], 0
    for f in sorted(Path(directory).glob("*.any")):
        a = any_pb2.Any()
        a.ParseFromString(f.read_bytes())
        msg = unpack(a)
        name = getattr(msg, "name", "") or getattr(msg, "cluster_name", "")
        check(msg, f"{f.name}:{name}", failures)
        count += 1
    for line in failures:
        print(line)
    print(f"{count} resources, {len(failures)} violations")
    return 1 if failures or count == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
