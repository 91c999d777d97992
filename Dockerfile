# A static relay alone in an empty image.
FROM rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo resolves every path dependency, the tests' dev-only testkit too.
COPY testkit ./testkit
RUN cargo build --release --locked --target x86_64-unknown-linux-musl

FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/httprelay /httprelay
USER 65534:65534
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD ["/httprelay", "--health-check"]
ENTRYPOINT ["/httprelay"]
CMD ["-a", "0.0.0.0", "-p", "8080"]
