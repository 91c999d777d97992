# A static relay alone in an empty image, for linux/amd64 or linux/arm64:
#
#   docker build -t httprelay .
#   docker buildx build --platform linux/arm64 -t httprelay:arm64 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/httprelay --push .
#
# The build stage runs on the builder's own platform and cross-compiles for
# TARGETARCH with scripts/static-build.sh (rust-lld links both targets), so
# building the arm64 image needs no emulation.
FROM --platform=$BUILDPLATFORM rust:1-bookworm AS build
ARG TARGETARCH
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo resolves every path dependency, the tests' dev-only testkit too.
COPY testkit ./testkit
COPY scripts/static-build.sh ./scripts/
RUN scripts/static-build.sh "${TARGETARCH:-amd64}" \
    && cp target/*-unknown-linux-musl/release/httprelay /httprelay

# Memory: the relay reads the container's limit (`docker run -m 128m`, a
# compose file's `mem_limit`, a Kubernetes memory limit) from its cgroup and
# takes half of it as its budget, deriving every limit from it
# (docs/memory.md, "Budget"); without a limit, a quarter of the host's memory,
# at most 360 MiB. `--memory 48M` after the image name overrides.
FROM scratch
COPY --from=build /httprelay /httprelay
USER 65534:65534
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD ["/httprelay", "--health-check"]
ENTRYPOINT ["/httprelay"]
CMD ["-a", "0.0.0.0", "-p", "8080"]
