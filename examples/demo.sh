#!/usr/bin/env bash
# The main job: package the examples, deploy them on a local tritonserver, invoke them over HTTP
# and gRPC (the streaming one chunk by chunk), show the endpoints, and undeploy.
set -euo pipefail
cd "$(dirname "$0")/.."

workdir=$(mktemp -d)
deployment=mfn-demo
trap 'mfn undeploy "$deployment" >/dev/null 2>&1 || true; rm -rf "$workdir"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "package"
mfn package examples/mlp/handler.py:MLP --output "$workdir/models"
mfn package examples/text_stats/handler.py:text_stats --output "$workdir/models"
mfn package examples/char_stream/handler.py:CharStream --output "$workdir/models"

step "deploy"
mfn deploy "$workdir/models" --name "$deployment"

step "invoke over HTTP"
mfn invoke mlp --data '{"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}' --protocol http
mfn invoke text_stats --data '{"text": [["model functions, served"]]}' --protocol http

step "invoke over gRPC"
mfn invoke mlp --data '{"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}' --protocol grpc
mfn invoke text_stats --data '{"text": [["model functions, served"]]}' --protocol grpc

step "stream: each chunk as the model yields it"
mfn invoke char_stream --stream --protocol grpc --data '{"prompt": [["the mo"]], "max_chars": [[40]]}'
mfn invoke char_stream --stream --protocol http --json --data '{"prompt": [["one y"]], "max_chars": [[8]]}'

step "status"
mfn status

step "undeploy"
mfn undeploy "$deployment"
