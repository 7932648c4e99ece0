# syntax=docker/dockerfile:1
#
# rkllama-router as one binary on an empty image, for amd64 and arm64 boards alike:
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t registry.example.com/rkllama-router:0.1.0 --push .
#
# Nothing runs under emulation (no QEMU): every stage that has a RUN runs on the builder's
# own platform, `deno compile --target` cross-compiles, and the one stage of the target
# platform is only copied from.

ARG DENO_VERSION=2.9.6
ARG DEBIAN_IMAGE=debian:12-slim

# 1. Compile for $TARGETARCH with the deno.json task compile:amd64 or compile:arm64, whose
#    flags are the start task's (deploy_test.ts checks it). The network is needed here: the
#    npm packages and the Deno runtime for the target.
FROM --platform=$BUILDPLATFORM denoland/deno:${DENO_VERSION} AS build
WORKDIR /src
COPY deno.json deno.lock ./
RUN deno install --frozen
COPY . .
ARG TARGETARCH
RUN deno task compile:${TARGETARCH}

# 2. Debian 12's glibc built for the target architecture. No RUN here, so pulling the
#    target platform's image needs no emulation.
FROM --platform=$TARGETPLATFORM ${DEBIAN_IMAGE} AS target-glibc

# 3. The image's files laid out natively (the target's libraries are only bytes here): the
#    libraries the binary links go where that architecture's loader looks for them, the
#    loader at the path written in the binary, and an empty /tmp.
FROM --platform=$BUILDPLATFORM ${DEBIAN_IMAGE} AS rootfs
ARG TARGETARCH
COPY --from=target-glibc \
  /usr/lib/*-linux-gnu/ld-linux-*.so.* \
  /usr/lib/*-linux-gnu/libc.so.6 \
  /usr/lib/*-linux-gnu/libm.so.6 \
  /usr/lib/*-linux-gnu/libgcc_s.so.1 \
  /usr/lib/*-linux-gnu/libdl.so.2 \
  /usr/lib/*-linux-gnu/libpthread.so.0 \
  /usr/lib/*-linux-gnu/librt.so.1 \
  /glibc/
RUN set -eu; \
  case "$TARGETARCH" in \
    amd64) triple=x86_64-linux-gnu; loader=/lib64/ld-linux-x86-64.so.2 ;; \
    arm64) triple=aarch64-linux-gnu; loader=/lib/ld-linux-aarch64.so.1 ;; \
    *) echo "rkllama-router builds for amd64 and arm64, not '$TARGETARCH'" >&2; exit 1 ;; \
  esac; \
  mkdir -p "/rootfs/lib/$triple" "/rootfs$(dirname "$loader")" /rootfs/tmp; \
  mv "/glibc/$(basename "$loader")" "/rootfs$loader"; \
  mv /glibc/* "/rootfs/lib/$triple/"; \
  chmod 1777 /rootfs/tmp

# 4. The image: no shell, no package manager, no /etc. It runs as a numeric non-root user
#    (no /etc/passwd needed) and, as PID 1, handles SIGTERM itself: it stops accepting,
#    finishes the requests in flight, releases the Lease and exits.
FROM scratch
LABEL org.opencontainers.image.title="rkllama-router" \
  org.opencontainers.image.description="Model-aware Ollama-compatible router for RKLlama NPU boards"
COPY --from=rootfs /rootfs/ /
ARG TARGETARCH
COPY --from=build /src/dist/rkllama-router-${TARGETARCH} /rkllama-router
USER 65532:65532
# V8's runtime settings are in the binary: the compile tasks pass --v8-flags, as the start
# task does (deploy_test.ts checks it). The young generation is held to 8 MiB semi-spaces (by
# default its new space grew to 27 MiB under load here, 14 MiB with this), and the old one
# collected once it doubles (--heap-growing-percent=100; by default V8 let it grow up to four
# times what survived, about 15 MiB live to 60-80 MiB). RSS after 10 s of small requests at
# 64 connections: about 200 MiB with neither, 155-175 with the first, 130-145 with both; CPU
# per request the same within noise in one run (bench/edge.ts). 2 MiB semi-spaces cost 18-50%
# more CPU (issue 16, docs/performance.md).
# glibc's allocator, told to give memory back: request bodies are large, short-lived
# buffers, and with its defaults (an arena per thread, a threshold for mmap that grows
# after each large free) RSS stayed at the peak of a burst of bodies. 20 concurrent
# 5 MiB chats, 6 times (bench/, issue 16): 928 MiB after the burst -> 510 MiB.
ENV MALLOC_ARENA_MAX=2 \
  MALLOC_TRIM_THRESHOLD_=131072 \
  MALLOC_MMAP_THRESHOLD_=131072
EXPOSE 8080
ENTRYPOINT ["/rkllama-router"]
