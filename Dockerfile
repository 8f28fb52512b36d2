# Both images from one build context:
#   docker build --target operator      -t kotel/operator .
#   docker build --target inference-app -t kotel/inference-app .
# Tilt (Tiltfile) builds both for kind. Runtime images are distroless and run as non-root.
# Without Docker, e2e/images.sh packs the same two images (and a test compares them with the
# stages below: entrypoint, cmd, user, exposed ports, copied paths).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Caches survive between builds on the same machine (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kotel-operator -p inference-app -p loadgen \
 && mkdir -p /out \
 && cp target/release/kotel-operator target/release/inference-app target/release/loadgen /out/ \
 && /out/inference-app train --out /out/model

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/kotel-operator /usr/local/bin/kotel-operator
USER 65532:65532
# /metrics, /healthz and /readyz (the chart's service.port).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kotel-operator"]

FROM gcr.io/distroless/cc-debian12:nonroot AS inference-app
COPY --from=build /out/inference-app /usr/local/bin/inference-app
# The load generator, for client pods (`kubectl run --command -- /usr/local/bin/loadgen`).
COPY --from=build /out/loadgen /usr/local/bin/loadgen
# The trained model and its card; `serve` refuses to start if they do not match.
COPY --from=build /out/model /model
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/inference-app"]
CMD ["serve", "--model-dir", "/model"]
