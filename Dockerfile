# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are compiled in their own cached layer,
# the release binary is copied into a small non-root runtime image.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /app
# Dependencies first: this layer is rebuilt only when Cargo.toml/Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin synckairos \
    && rm -rf src
COPY src src
COPY migrations migrations
COPY openapi.yaml openapi.yaml
# The demo at /demo embeds the TypeScript SDK's committed build.
COPY sdk/typescript/dist sdk/typescript/dist
# The stub build left newer timestamps on the dummy targets: make cargo rebuild ours.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin synckairos

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home synckairos
COPY --from=build /app/target/release/synckairos /usr/local/bin/synckairos
USER synckairos
ENV HOST=0.0.0.0 PORT=3000 LOG_FORMAT=json
EXPOSE 3000
# No HEALTHCHECK: the platform (fly.toml) checks /health itself.
# CMD, not ENTRYPOINT: Fly's release_command ("synckairos migrate") replaces
# the command line whole, and the binary is on PATH.
CMD ["synckairos"]
