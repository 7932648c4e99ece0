#!/usr/bin/env bash
# Provides kube-apiserver and etcd for `deno task test:cluster` (test/cluster_test.ts), the
# way controller-runtime's envtest does, and prints the directory holding them as the last
# line of stdout; or prints "skip: WHY" when there is no way to get them (no assets, no Go).
#
#  1. $KUBEBUILDER_ASSETS, when it holds both (e.g. from `setup-envtest use -p path`);
#  2. else the cache, ${XDG_CACHE_HOME:-~/.cache}/rkllama-router/envtest/<version>/, when it was
#     built from the go.mod and go.sum beside this script;
#  3. else built with Go into that cache: go.mod requires k8s.io/kubernetes and etcd's server
#     as tools and pins the staging modules with replace lines. From nothing, on 2 cores, about
#     8 minutes and 90 MB from the Go module proxy; seconds with a warm Go build cache.
#
# Nothing is written into the repository. --force builds again even when the cache is current.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

has_both() { [[ -x "$1/kube-apiserver" && -x "$1/etcd" ]]; }

if [[ "${1:-}" != "--force" && -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  if has_both "$KUBEBUILDER_ASSETS"; then
    echo "$(cd "$KUBEBUILDER_ASSETS" && pwd)"
    exit 0
  fi
  echo "envtest: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd; using the cache" >&2
fi

version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$here/go.mod")"
[[ -n "$version" ]] || { echo "envtest: no k8s.io/kubernetes version in $here/go.mod" >&2; exit 1; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/rkllama-router/envtest/$version"
stamp="$(cat "$here/go.mod" "$here/go.sum" "$here/assets.sh" | sha256sum | cut -d' ' -f1)"
current() { has_both "$cache" && [[ "$(cat "$cache/stamp" 2>/dev/null)" == "$stamp" ]]; }

if [[ "${1:-}" != "--force" ]] && current; then
  echo "$cache"
  exit 0
fi

# Go lives in /usr/local/go on these machines, which a bare CI shell may not have on PATH.
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
  echo "skip: no kube-apiserver and etcd (set KUBEBUILDER_ASSETS to a directory holding both) and no Go to build them"
  exit 0
fi

mkdir -p "$cache"
# One build at a time; whoever waited finds the cache current.
exec 9>"$cache.lock"
flock 9
if [[ "${1:-}" != "--force" ]] && current; then
  echo "$cache"
  exit 0
fi
rm -f "$cache/stamp"
echo "envtest: building kube-apiserver $version and etcd into $cache with $(go version) (minutes on a cold Go cache)" >&2
start=$SECONDS
cd "$here"
for tool in kube-apiserver:k8s.io/kubernetes/cmd/kube-apiserver etcd:go.etcd.io/etcd/server/v3; do
  # Static, without this machine's paths or VCS stamps; -mod=readonly: go.sum pins every module.
  CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -buildvcs=false -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version" \
    -o "$cache/${tool%%:*}.partial" "${tool#*:}"
  mv "$cache/${tool%%:*}.partial" "$cache/${tool%%:*}"
done
echo "$stamp" >"$cache/stamp"
echo "envtest: built in $((SECONDS - start)) s" >&2
echo "$cache"
