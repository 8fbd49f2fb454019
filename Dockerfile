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
COPY --from=build /out/speechgate /speechgate
USER nonroot:nonroot
# gRPC (plaintext h2c unless --tls-cert is set).
EXPOSE 50051
ENTRYPOINT ["/speechgate"]
