# syntax=docker/dockerfile:1
# speechgate: a static binary on distroless, run as non-root.

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that a code change does not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The same command .ci/run builds, so that CI catches what would break here.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/speechgate ./cmd/speechgate

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="speechgate" \
      org.opencontainers.image.description="Smallest AI's speech APIs behind one typed, streaming gRPC contract" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/speechgate /speechgate
# distroless' nonroot user (65532); the binary needs no writable file system.
USER 65532:65532
# gRPC (plaintext h2c unless --tls-cert is set), and the admin HTTP server
# (/metrics, /healthz, /readyz).
EXPOSE 50051 8080 9090
ENTRYPOINT ["/speechgate"]
