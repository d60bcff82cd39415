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

# The style gates first (they fail in seconds to minutes, before the long runs): formatting,
# clippy with warnings as errors, and the API docs with their intra-doc links checked. A
# toolchain without rustfmt/clippy skips that gate with a message instead of failing.
if cargo fmt --version >/dev/null 2>&1; then
  echo "== cargo fmt --check =="
  cargo fmt --all --check
else
  echo "== cargo fmt --check: skipped (rustfmt is not installed) =="
fi
if cargo clippy --version >/dev/null 2>&1; then
  echo "== cargo clippy (warnings are errors) =="
  cargo clippy --workspace --locked --all-targets --features k8s-snap/failpoints -- -D warnings
else
  echo "== cargo clippy: skipped (clippy is not installed) =="
fi
echo "== cargo doc (broken or private intra-doc links are errors) =="
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --locked --no-deps --features k8s-snap/failpoints

# `failpoints`: the test-only fault injection the crash tests need (off in release builds).
echo "== cargo test (workspace) =="
cargo test --workspace --locked --all-targets --no-fail-fast --features k8s-snap/failpoints

# The end-to-end tests again against the emulator's profiles of older servers (the run above
# used the latest), all three at once: each test makes its own emulators on free ports; and,
# beside them, once in their real-cluster mode against two emulator processes
# (scripts/real-mode.sh: the run must leave both clusters as it found them). The binaries are
# those the run above built (same arguments, so nothing is rebuilt).
artifacts=$(cargo test --workspace --locked --all-targets --features k8s-snap/failpoints --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        t = m["target"]
        ours = "kube-emulator" not in m["package_id"]
        if t["name"] == "it" and ours:
            print("it", m["executable"])
        elif t["name"] in ("k8s-snap", "kube-emulator") and "bin" in t["kind"] and not m["profile"]["test"]:
            print(t["name"], m["executable"])')
artifact() { echo "$artifacts" | awk -v n="$1" '$1 == n { print $2; exit }'; }
it_bin=$(artifact it)
logs=$(mktemp -d)
pids=()
runs=(1.19 1.22 1.25 real-mode real-mode-1.19)
for v in 1.19 1.22 1.25; do
  echo "== end-to-end tests on the emulator's Kubernetes $v profile (in parallel) =="
  KUBE_EMULATOR_SERVER_VERSION=$v "$it_bin" --test-threads 2 >"$logs/$v.log" 2>&1 &
  pids+=($!)
done
echo "== end-to-end tests in their real-cluster mode, against two emulator processes (in parallel) =="
bash scripts/real-mode.sh "$it_bin" "$(artifact k8s-snap)" "$(artifact kube-emulator)" >"$logs/real-mode.log" 2>&1 &
pids+=($!)
echo "== the same against two emulator processes serving as Kubernetes 1.19 (in parallel) =="
KUBE_EMULATOR_SERVER_VERSION=1.19 bash scripts/real-mode.sh "$it_bin" "$(artifact k8s-snap)" "$(artifact kube-emulator)" >"$logs/real-mode-1.19.log" 2>&1 &
pids+=($!)
failed=0
for i in "${!runs[@]}"; do
  if ! wait "${pids[$i]}"; then failed=1; fi
  echo "== ${runs[$i]} =="
  grep -E '^test result|FAILED|panicked|left as found|left changes' "$logs/${runs[$i]}.log" || true
done
if [ "$failed" != 0 ]; then
  for r in "${runs[@]}"; do echo "== full log of $r =="; cat "$logs/$r.log"; done
  exit 1
fi
