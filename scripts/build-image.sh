#!/usr/bin/env bash
# Builds the dkron-rs container image from this checkout, with no base image:
# a statically linked dkron, static busybox for the shell executor, and the CA bundle.
#   scripts/build-image.sh [tag]        (default tag: dkron-rs:dev)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-dkron-rs:dev}"

if [ ! -x /bin/busybox ] || ! file /bin/busybox 2>/dev/null | grep -q static; then
  echo "== installing busybox-static and ca-certificates"
  apt-get update -qq && apt-get install -y -qq busybox-static ca-certificates >/dev/null
fi

echo "== building a static dkron (glibc, +crt-static)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p dkron \
  --target x86_64-unknown-linux-gnu --target-dir target/static
bin=target/static/x86_64-unknown-linux-gnu/release/dkron

stage=target/image
rm -rf "$stage" && mkdir -p "$stage/rootfs/usr/local/bin" "$stage/rootfs/bin" \
  "$stage/rootfs/etc/ssl/certs" "$stage/rootfs/tmp" "$stage/rootfs/dkron.data"
cp "$bin" "$stage/rootfs/usr/local/bin/dkron"
cp /bin/busybox "$stage/rootfs/bin/busybox"
cp /etc/ssl/certs/ca-certificates.crt "$stage/rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$stage/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$stage/rootfs/etc/group"
printf 'hosts: files dns\n' > "$stage/rootfs/etc/nsswitch.conf"
chmod 1777 "$stage/rootfs/tmp"
cp docker/Dockerfile "$stage/Dockerfile"

echo "== docker build -t $tag"
docker build -q -t "$tag" "$stage"
docker run --rm "$tag" version
