#!/usr/bin/env bash
# The end-to-end tests in their real-cluster mode: K8S_SNAP_TEST_KUBECONFIG and
# K8S_SNAP_TEST_KUBECONFIG_B point at two emulator *processes* (`kube-emulator serve`, A with
# the realistic fixture, B empty), so the tests take the code paths they take against real
# clusters (shared clusters, unique namespaces, cleanup, serialized restores onto B). Both
# clusters are snapshotted before and after the run with k8s-snap itself: the run must leave B
# exactly as it found it, and A with nothing but the k8s-snap CRDs the controller tests
# install (as installing k8s-snap does; README "Testing against real clusters").
#   bash scripts/real-mode.sh IT_BINARY K8S_SNAP_BINARY KUBE_EMULATOR_BINARY
set -euo pipefail
it_bin=$1
k8s_snap=$2
emulator=$3
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

serve() { # name fixture
  "$emulator" serve --fixture "$2" --write-kubeconfig "$work/$1.yaml" >"$work/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    grep -q '^listening on' "$work/$1.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "kube-emulator serve ($1) did not start:" >&2
  cat "$work/$1.log" >&2
  return 1
}
serve a realistic
serve b empty

snap() { # cluster name
  "$k8s_snap" --data-dir "$work/data" --kubeconfig "$work/$1.yaml" -q \
    snapshot "$2" --cluster "$1" --no-push >/dev/null
}
snap a a-before
snap b b-before

status=0
K8S_SNAP_TEST_KUBECONFIG="$work/a.yaml" K8S_SNAP_TEST_KUBECONFIG_B="$work/b.yaml" \
  "$it_bin" --test-threads 2 >"$work/it.log" 2>&1 || status=$?
grep -E '^test result|FAILED|panicked' "$work/it.log" || true
if [ "$status" != 0 ]; then
  cat "$work/it.log"
  exit "$status"
fi

snap a a-after
snap b b-after
left_a=$("$k8s_snap" --data-dir "$work/data" diff a-before a-after --stat |
  grep -Ev '^added +/apis/apiextensions.k8s.io/v1/customresourcedefinitions/[a-z]+\.clustersnapshot\.rywt\.io$' |
  grep -Ev '^[0-9]+ added, 0 removed, 0 changed$' || true)
left_b=$("$k8s_snap" --data-dir "$work/data" diff b-before b-after --stat |
  grep -Ev '^0 added, 0 removed, 0 changed$' || true)
if [ -n "$left_a$left_b" ]; then
  echo "the real-cluster-mode run left changes behind:"
  [ -z "$left_a" ] || printf 'on A:\n%s\n' "$left_a"
  [ -z "$left_b" ] || printf 'on B:\n%s\n' "$left_b"
  exit 1
fi
echo "clusters A and B left as found (A: k8s-snap's CRDs only)"
