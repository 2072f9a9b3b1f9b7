# The exporter's container image.
#
# Build:  docker build -t evotic-exporter:0.1.0 .
# Run:    docker run --rm -p 19875:19875 evotic-exporter:0.1.0 --demo
#
# The builder stage turns the source into a wheel and installs it, with its dependencies, into a
# virtual environment; the final stage is the same base with only that environment copied in, so
# neither the source tree nor the wheel ends up in the image. tests/test_deploy.py lints this file
# and runs the same build and install steps outside Docker, then starts the installed entrypoint.

# One base for both stages: the venv's interpreter is a link to /usr/local/bin/python3.11, which
# has to exist at the same path in the final image. Pinned to an exact Python and Debian release;
# bump both FROM lines together.
FROM python:3.11.17-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# Only what the wheel is built from (pyproject.toml names README.md as the long description).
COPY pyproject.toml README.md ./
COPY exporter/ exporter/
COPY simulator/ simulator/

# The venv gets no pip of its own: the base image's pip installs into it from outside, so the
# final image carries no installer in the environment the exporter runs from. pip compiles the
# bytecode during the install, so the read-only image never needs to write any.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install /wheels/*.whl \
 && pip --python /opt/venv/bin/python check


FROM python:3.11.17-slim-bookworm

LABEL org.opencontainers.image.title="evotic-exporter" \
      org.opencontainers.image.description="Prometheus exporter for servers hosted at Evotic" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=builder /opt/venv /opt/venv

# A numeric user with no passwd entry: Kubernetes can check runAsNonRoot only against a number,
# and the exporter needs no home directory. 65532 is the usual "nonroot" id of minimal images.
USER 65532:65532

EXPOSE 19875

# Liveness only (the poll loop is running), not readiness: a container whose API is unreachable
# is still healthy and still reports evotic_up 0. slim has no curl, so Python asks. When the
# listen address is changed or a web config adds TLS or basic auth, override this check
# (docker run --health-cmd, or healthcheck: in compose).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:19875/healthz', timeout=4)"]

ENTRYPOINT ["/opt/venv/bin/evotic-exporter"]
