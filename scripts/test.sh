#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine, installing what it needs.
#   bash scripts/test.sh
# Needs: the Rust toolchain (cargo), python3 with pip (for moto's S3 server), kubectl (optional:
# the kubectl compatibility tests are skipped with a message when it is absent).
set -euo pipefail
cd "$(dirname "$0")/.."

# moto's S3-compatible server, a real process the store tests start on a loopback port.
if ! python3 -c 'import moto.server, flask' >/dev/null 2>&1; then
  echo "== installing moto[server] (S3-compatible test server) =="
  pip_install() { python3 -m pip install --quiet --disable-pip-version-check "$@" 'moto[server]>=5,<6'; }
  # A system Python may be "externally managed" (PEP 668): fall back to the user site, then
  # to overriding the marker (moto is a test-only dependency).
  pip_install || pip_install --user || pip_install --user --break-system-packages
fi

echo "== cargo test (workspace) =="
cargo test --workspace --locked --all-targets --no-fail-fast
