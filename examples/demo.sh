#!/usr/bin/env bash
# The main job: package both examples, deploy them on a local tritonserver, invoke them over HTTP
# and gRPC, show the endpoints, and undeploy.
set -euo pipefail
cd "$(dirname "$0")/.."

workdir=$(mktemp -d)
deployment=mfn-demo
trap 'mfn undeploy "$deployment" >/dev/null 2>&1 || true; rm -rf "$workdir"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "package"
mfn package examples/mlp/handler.py:MLP --output "$workdir/models"
mfn package examples/text_stats/handler.py:text_stats --output "$workdir/models"

step "deploy"
mfn deploy "$workdir/models" --name "$deployment"

step "invoke over HTTP"
mfn invoke mlp --data '{"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}' --protocol http
mfn invoke text_stats --data '{"text": [["model functions, served"]]}' --protocol http

step "invoke over gRPC"
mfn invoke mlp --data '{"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}' --protocol grpc
mfn invoke text_stats --data '{"text": [["model functions, served"]]}' --protocol grpc

step "status"
mfn status

step "undeploy"
mfn undeploy "$deployment"
