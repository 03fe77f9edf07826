# syntax=docker/dockerfile:1
# The one `rota` binary (extender, agent, simulator) on a distroless base, running as non-root.
#   docker build -t REGISTRY/rota:TAG .
# Then point deploy/kustomization.yaml's `images:` at it.

# --- build -------------------------------------------------------------------------------
# Debian 12 (bookworm), the same glibc as the runtime image below.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Only what the build reads (see .dockerignore): the manifest, the lockfile, the sources, and
# the bench targets Cargo.toml declares (cargo refuses a manifest whose targets are missing).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# --locked: exactly the dependency versions of Cargo.lock. The cache mounts keep the registry
# and the build directory between builds, so only changed crates recompile.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin rota \
    && cp target/release/rota /rota

# --- runtime -----------------------------------------------------------------------------
# glibc and libgcc only, no shell, no package manager. NVML (libnvidia-ml.so) is not here on
# purpose: rota loads it at run time, and the NVIDIA container runtime injects it into the
# agent's container (runtimeClassName: nvidia).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /rota /rota
# 65532 is distroless's `nonroot`; numeric so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
# The extender's port (scheduler calls, /metrics, probes) and the agent's.
EXPOSE 8888 9402
ENTRYPOINT ["/rota"]
CMD ["--help"]
