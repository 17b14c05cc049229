# syntax=docker/dockerfile:1
#
# The sealtrail image: one binary, every role (`serve`, `gateway`, `chainer`, `migrate`,
# `keys`). The role is the first argument: `docker run IMAGE gateway --http-addr 0.0.0.0:8080`.
#
#   docker build -t sealtrail:dev .
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.
# Base images are pinned; update them deliberately (the Rust version must stay at or above
# the workspace's rust-version, 1.89; both stages must use the same Debian release so the
# binary's glibc matches).

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

# ---- build -------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder

# rdkafka builds librdkafka from its bundled source and links it statically: it needs a C/C++
# toolchain, make, cmake and zlib (the `libz` feature). protobuf-compiler is for code generated
# from proto/ (the gRPC API) if a build script calls protoc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        cmake make gcc g++ pkg-config zlib1g-dev protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The registry and target/ are cache mounts (kept between builds, not in the image), so the
# binary is copied out of target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sealtrail \
    && install -D -m 0755 target/release/sealtrail /out/sealtrail

# ---- runtime -----------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid/gid (10001), so Kubernetes' runAsNonRoot can check it and volumes
# can be prepared for it. /var/lib/sealtrail is the working directory and the embedded
# mode's data directory (`serve`); the distributed roles write nothing to disk.
RUN groupadd --system --gid 10001 sealtrail \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sealtrail \
        --shell /usr/sbin/nologin sealtrail \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/sealtrail

COPY --from=builder /out/sealtrail /usr/local/bin/sealtrail

USER 10001:10001
WORKDIR /var/lib/sealtrail
ENV SEALTRAIL_DATA_DIR=/var/lib/sealtrail

# Listen addresses default to 127.0.0.1; in a container pass 0.0.0.0 (--http-addr /
# SEALTRAIL_HTTP_ADDR, --grpc-addr / SEALTRAIL_GRPC_ADDR). Ports: gateway and serve 8080
# (REST, /healthz, /metrics) and 50051 (gRPC); chainer 8081 (/healthz, /metrics).
EXPOSE 8080 8081 50051

# sealtrail is PID 1 and handles SIGTERM itself (graceful stop), so no init is needed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sealtrail"]
CMD ["--help"]
