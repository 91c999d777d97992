# A static relay alone in an empty image, for linux/amd64 or linux/arm64:
#
#   docker build -t httprelay .
#   docker buildx build --platform linux/arm64 -t httprelay:arm64 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/httprelay --push .
#   docker build --build-arg TLS=1 -t httprelay:tls .     # with HTTPS (--tls-cert)
#
# The build stage runs on the builder's own platform and cross-compiles for
# TARGETARCH with scripts/static-build.sh (rust-lld links both targets), so
# building the arm64 image needs no emulation.
FROM --platform=$BUILDPLATFORM rust:1-bookworm AS build
ARG TARGETARCH
# 1: the tls build (rustls; its C is compiled by clang), `httprelay -V`
# says "(tls)"; 0: plain HTTP only, the smaller binary.
ARG TLS=0
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo resolves every path dependency, the tests' dev-only testkit too.
COPY testkit ./testkit
COPY scripts/static-build.sh scripts/install-tls-tools.sh ./scripts/
RUN if [ "$TLS" = 1 ]; then \
        scripts/static-build.sh --tls "${TARGETARCH:-amd64}" \
        && cp target/tls/*-unknown-linux-musl/release/httprelay /httprelay; \
    else \
        scripts/static-build.sh "${TARGETARCH:-amd64}" \
        && cp target/*-unknown-linux-musl/release/httprelay /httprelay; \
    fi

# Memory: the relay reads the container's limit (`docker run -m 128m`, a
# compose file's `mem_limit`, a Kubernetes memory limit) from its cgroup and
# takes half of it as its budget, deriving every limit from it
# (docs/memory.md, "Budget"); without a limit, a quarter of the host's memory,
# at most 360 MiB. `--memory 48M` after the image name overrides.
FROM scratch
ARG TLS=0
LABEL org.opencontainers.image.title="httprelay" \
      io.httprelay.tls="${TLS}"
COPY --from=build /httprelay /httprelay
USER 65534:65534
# 8443: HTTPS, in the tls build, with --tls-cert and --tls-key (certificates
# mounted into the container).
EXPOSE 8080 8443
HEALTHCHECK --interval=30s --timeout=5s CMD ["/httprelay", "--health-check"]
ENTRYPOINT ["/httprelay"]
CMD ["-a", "0.0.0.0", "-p", "8080"]
