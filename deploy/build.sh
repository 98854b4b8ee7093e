#!/usr/bin/env bash
# Builds the `brook` image from this checkout: a statically linked release
# binary (glibc, crt-static: no libc needed in the image) copied into an
# image FROM scratch. Needs only the Rust toolchain and a Docker engine;
# no base image is pulled. Also writes deploy/cluster.env, the compose
# cluster's secret (once, random; kept if it exists).
#
# Usage: deploy/build.sh [IMAGE]   (default image name: brook:dev)
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,7p' "$0"; exit 0
fi
image="${1:-brook:dev}"
cd "$(dirname "$0")/.."
if [[ ! -s deploy/cluster.env ]]; then
  (umask 077; echo "BROOK_CLUSTER_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >deploy/cluster.env)
fi
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" -p brook
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "${CARGO_TARGET_DIR:-target}/$target/release/brook" "$context/brook"
strip "$context/brook" 2>/dev/null || true
docker build -t "$image" -f deploy/Dockerfile "$context"
docker image ls "$image"
