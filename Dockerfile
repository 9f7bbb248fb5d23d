# syntax=docker/dockerfile:1

# The qx-regions image: one static binary on distroless, as a non-root user.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t qx-regions .
#   docker run --rm qx-regions version
#
# Every setting is an environment variable (docker run -e QX_...); see
# `docker run --rm qx-regions replicate --help`. In a container the admin
# server must listen on all interfaces: QX_ADMIN__ADDR=0.0.0.0:9180.

# Build on the machine's own platform and cross-compile: no emulation for
# multi-platform builds (docker buildx build --platform linux/amd64,linux/arm64).
FROM --platform=$BUILDPLATFORM golang:1.26-alpine AS build
WORKDIR /src
# Dependencies first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH
ARG VERSION=dev
# CGO off: a static binary that runs on distroless/static (no libc there).
# -buildvcs=false: .git is not in the build context (.dockerignore); VERSION
# stamps the build instead.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=$VERSION" \
        -o /out/qx-regions ./cmd/qx-regions

# distroless/static has CA certificates (NATS TLS, Postgres sslmode=verify-full),
# tzdata and a nonroot user, and no shell or package manager. Without a shell
# the image has no HEALTHCHECK: probe the admin server's /healthz and /readyz
# over HTTP from the orchestrator instead.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/qx-regions /usr/local/bin/qx-regions
# Numeric, so that Kubernetes' runAsNonRoot can verify it (65532 is nonroot).
USER 65532:65532
# The admin server (/healthz, /readyz, /metrics) when QX_ADMIN__ADDR=0.0.0.0:9180.
EXPOSE 9180
ENTRYPOINT ["/usr/local/bin/qx-regions"]
CMD ["replicate"]
