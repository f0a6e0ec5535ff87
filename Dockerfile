# The exporter's container image: `inngest-cancellation-exporter serve` as uid 10001, on port 9469,
# state under /var/lib/inngest-cancellation-exporter. Runs with a read-only root filesystem
# (the Helm chart mounts the state directory and a writable /tmp).
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what `pip install .` reads: pyproject.toml names README.md as the package's readme.
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

FROM python:${PYTHON_VERSION}-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EXPORTER_STATE_DIR=/var/lib/inngest-cancellation-exporter
RUN groupadd --system --gid 10001 exporter \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin exporter \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/inngest-cancellation-exporter
COPY --from=build /opt/venv /opt/venv
# The state directory is the only place the exporter writes to, so it is also where it runs.
WORKDIR /var/lib/inngest-cancellation-exporter
VOLUME ["/var/lib/inngest-cancellation-exporter"]
USER 10001:10001
EXPOSE 9469
ENTRYPOINT ["inngest-cancellation-exporter"]
CMD ["serve"]
