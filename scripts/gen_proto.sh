#!/usr/bin/env bash
# The one generation step of the gRPC stubs: proto/facegate/v1/facegate.proto -> facegate/v1/.
# tests/service/test_proto_stubs.py proves the committed stubs match the .proto.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.}
"${PYTHON:-.venv/bin/python}" -m grpc_tools.protoc -Iproto --python_out="$OUT" --pyi_out="$OUT" \
  --grpc_python_out="$OUT" proto/facegate/v1/facegate.proto
