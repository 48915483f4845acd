# syntax=docker/dockerfile:1
#
# ldap2exo's container image: the daemon (`ldap2exo daemon`) as a non-root user on Debian
# bookworm. Build with `docker build -t ldap2exo .` (BuildKit, the default since Docker 23).
# The README's "Running in production" shows how to run it; docker-compose.yml runs it against
# the fixture directory and the tenant emulator.
#
# Inside a container the daemon must listen on all interfaces for the port to be published:
# this image sets LDAP2EXO__DAEMON__LISTEN=0.0.0.0:9464 (the default is 127.0.0.1:9464).

# The Rust of Cargo.toml's rust-version, on the same Debian release as the runtime image (glibc).
ARG RUST_IMAGE=rust:1.94-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# aws-lc-sys and the bundled SQLite compile C: the image's gcc and make are enough.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ldap2exo \
    && install -m 0755 target/release/ldap2exo /usr/local/bin/ldap2exo

# The tenant emulator, for docker-compose.yml's demo only (`--target emulator`); the default
# target below never builds it.
FROM ${RUST_IMAGE} AS emulator-build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ldap2exo-emulator --bin ldap2exo-emulator \
    && install -m 0755 target/release/ldap2exo-emulator /usr/local/bin/ldap2exo-emulator

FROM debian:bookworm-slim AS emulator
COPY --from=emulator-build /usr/local/bin/ldap2exo-emulator /usr/local/bin/ldap2exo-emulator
ENTRYPOINT ["ldap2exo-emulator"]

FROM debian:bookworm-slim AS runtime
# ca-certificates: the system roots ldap2exo trusts for Microsoft's endpoints and LDAPS.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid, so secret files and volumes can be given to it from the host.
RUN groupadd --system --gid 10001 ldap2exo \
    && useradd --system --uid 10001 --gid ldap2exo --home-dir /var/lib/ldap2exo \
       --no-create-home --shell /usr/sbin/nologin ldap2exo \
    && install -d -m 0755 -o root -g root /etc/ldap2exo \
    && install -d -m 0750 -o ldap2exo -g ldap2exo /var/lib/ldap2exo
COPY --from=build /usr/local/bin/ldap2exo /usr/local/bin/ldap2exo

# The configuration is /etc/ldap2exo/ldap2exo.toml (mount it read-only); the state store is
# /var/lib/ldap2exo/state.db, the default [state] path (keep the directory on a volume).
VOLUME ["/var/lib/ldap2exo"]
ENV LDAP2EXO__DAEMON__LISTEN=0.0.0.0:9464
EXPOSE 9464
USER ldap2exo
WORKDIR /var/lib/ldap2exo

# GET /healthz with bash's /dev/tcp (no curl in the image), on the port the daemon listens on.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${LDAP2EXO__DAEMON__LISTEN##*:} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r -t 4 status <&3 && [[ $status == 'HTTP/1.'?' 200'* ]]"]

ENTRYPOINT ["ldap2exo"]
CMD ["daemon"]
