#!/usr/bin/env bash
# Builds bin/apiserver (a real kube-apiserver + embedded etcd for the router's
# tests, see main.go) unless it is already there, built from these very sources.
# Needs Go >= 1.26 and the Go module proxy. From nothing, on 2 cores: 88 MB of
# module downloads (470 MB unpacked), about 8 minutes, 2.8 GB of build cache, a
# 124 MB binary; with a warm cache about 10 s. Use --force to build again anyway.
set -euo pipefail
cd "$(dirname "$0")"

stamp="$(cat go.mod go.sum main.go build.sh | sha256sum | cut -d' ' -f1)"
if [[ "${1:-}" != "--force" && -x bin/apiserver && -f bin/apiserver.stamp &&
      "$(cat bin/apiserver.stamp)" == "$stamp" ]]; then
  echo "test/apiserver/bin/apiserver is up to date"
  exit 0
fi

# Go lives in /usr/local/go on these machines, which a bare CI shell may not have on PATH.
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build.sh: needs Go >= 1.26 on PATH" >&2; exit 1; }
mkdir -p bin
rm -f bin/apiserver bin/apiserver.stamp
echo "building test/apiserver/bin/apiserver with $(go version) (takes minutes on a cold cache)"
start=$SECONDS
# Static, without paths of this machine or VCS stamps: the same sources give the same binary.
CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -buildvcs=false -ldflags='-s -w' \
  -o bin/apiserver.partial .
mv bin/apiserver.partial bin/apiserver
echo "$stamp" > bin/apiserver.stamp
echo "built test/apiserver/bin/apiserver in $((SECONDS - start)) s"
