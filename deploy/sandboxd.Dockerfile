# sandboxd itself, as an image: the control plane on the Docker runtime, driving the engine whose
# socket it is handed (deploy/compose/docker-compose.yml) or one of its own.
#
#   docker build -f deploy/sandboxd.Dockerfile -t sandbox-platform/sandboxd .
#       builds from source in a Rust image (BUILDER), for hosts with a registry;
#   docker build -f deploy/sandboxd.Dockerfile --target prebuilt -t sandbox-platform/sandboxd .
#       takes binaries built on this host (BIN_DIR, target/release by default), for hosts
#       without one (these, CI). The stages come in this order so that the legacy builder,
#       which builds every stage up to the target, never needs the Rust image for it.
ARG BASE=debian:bookworm-slim
ARG BUILDER=rust:1-bookworm

FROM ${BASE} AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*
ENV SANDBOXD_DATA_DIR=/var/lib/sandboxd \
    SANDBOXD_LISTEN=0.0.0.0:8080 \
    SANDBOXD_RUNTIME=docker \
    SANDBOXD_WORKSPACE_VOLUMES=off
VOLUME /var/lib/sandboxd
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/sandboxd"]

FROM runtime AS prebuilt
ARG BIN_DIR=target/release
COPY ${BIN_DIR}/sandboxd ${BIN_DIR}/sbx /usr/local/bin/

FROM ${BUILDER} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sandboxd -p sbx

FROM runtime
COPY --from=build /src/target/release/sandboxd /src/target/release/sbx /usr/local/bin/
