# syntax=docker/dockerfile:1
# The logbook broker image: a multi-stage build (Rust toolchain -> minimal Debian runtime).
#
#   docker build -t logbook:dev .                       # public base images (needs a registry)
#   make image                                          # this repository's offline path:
#                                                       # local bases from debootstrap, vendored crates
#
# The runtime image runs as the non-root user `logbook` (uid/gid 10001), keeps its data in
# /var/lib/logbook (a volume), and reads /etc/logbook/logbook.toml (config/container.toml;
# mount another file there, or name one with LOGBOOK_CONFIG / --config) plus LOGBOOK_* variables. Ports: 7400 gRPC (clients and
# Raft), 7946 gossip (TCP and UDP), 7480 admin HTTP (/metrics, /healthz, /readyz).

ARG BUILDER_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
# The release profile keeps line tables (benchmarks, local backtraces), which quadruple the
# binary; the image's build makes none and strips what the toolchain's own libraries carry
# (symbols stay, so backtraces name functions).
ENV CARGO_PROFILE_RELEASE_DEBUG=false
# Crates come from crates.io, or from target/docker/vendor when `make image` vendored them
# (build hosts whose containers have no network).
# .dockerignore lets in only the sources (and target/docker/vendor when it exists).
COPY . .
RUN set -eu; \
    if [ -d target/docker/vendor ]; then \
      mkdir -p .cargo; \
      printf '[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "target/docker/vendor"\n' > .cargo/config.toml; \
    fi; \
    cargo build --release --locked --bin logbook; \
    install -D -m 0755 target/release/logbook /out/logbook; \
    strip --strip-debug /out/logbook

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.title="logbook" \
      org.opencontainers.image.description="A replicated, durable commit log" \
      org.opencontainers.image.version="${VERSION}"
RUN groupadd --system --gid 10001 logbook \
 && useradd --system --uid 10001 --gid logbook --no-create-home \
      --home-dir /var/lib/logbook --shell /usr/sbin/nologin logbook \
 && install -d -o logbook -g logbook -m 0750 /var/lib/logbook \
 && install -d -m 0755 /etc/logbook
COPY --from=build /out/logbook /usr/local/bin/logbook
# CA roots for HTTPS to S3 and EC2 (slim runtime bases ship none; the builder has them).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# Container defaults (listen on every interface, data on the volume) live in a file, so a
# mounted /etc/logbook/logbook.toml replaces all of them; LOGBOOK_<KEY> variables and flags
# override single keys. Everything else is the broker's embedded default.
COPY config/container.toml /etc/logbook/logbook.toml
ENV LOGBOOK_CONFIG=/etc/logbook/logbook.toml
USER 10001:10001
WORKDIR /var/lib/logbook
VOLUME ["/var/lib/logbook"]
EXPOSE 7400/tcp 7946/tcp 7946/udp 7480/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/logbook", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/logbook"]
CMD ["serve"]
