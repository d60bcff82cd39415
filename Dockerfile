# Multi-stage build of the k8s-snap binary (CLI and controller).
# docker build -t k8s-snap .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
COPY tests ./tests
COPY examples ./examples
RUN cargo build --release --locked --bin k8s-snap \
 && strip target/release/k8s-snap

# Distroless: no shell, non-root user 65532, CA certificates for https endpoints.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/k8s-snap /usr/local/bin/k8s-snap
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/k8s-snap"]
CMD ["controller"]
