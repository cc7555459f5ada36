# The orchestrator daemon (the default target), and the `chorus` command line (target `clients`): no torch in either.
#
#   docker build -f deploy/docker/orchestrator.Dockerfile -t chorus-orchestrator .
#   docker build -f deploy/docker/orchestrator.Dockerfile --target clients -t chorus-clients .
#
# The orchestrator extra (aiobotocore, aiohttp) and the base dependencies (grpcio, protobuf, prometheus-client) need
# no torch; the build fails if anything ever pulls it in. The clients extra adds numpy, soundfile, soxr, pysbd, tqdm,
# matplotlib and moto[server]: `chorus enqueue / stitch / report` run here, and so does moto's server, the compose
# stack's stand-in for SQS, S3 and DynamoDB.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV VIRTUAL_ENV=/opt/chorus/venv \
    PATH=/opt/chorus/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --gid 10001 chorus \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin chorus \
    && python -m venv "$VIRTUAL_ENV"
COPY deploy/docker/healthcheck.py /opt/chorus/healthcheck.py

# --- `chorus`: enqueue, say, stitch, report (and moto's server for the compose stack).
FROM base AS clients
RUN --mount=type=bind,source=.,target=/tmp/src,rw \
    --mount=type=cache,target=/root/.cache/pip \
    pip install "/tmp/src[orchestrator,clients]" \
    && python -c "import importlib.util, sys; sys.exit('torch must not be installed' if importlib.util.find_spec('torch') else 0)"
USER 10001:10001
WORKDIR /home/chorus
ENTRYPOINT ["chorus"]
CMD ["--help"]

# --- The orchestrator (last, so the default target).
FROM base AS orchestrator
RUN --mount=type=bind,source=.,target=/tmp/src,rw \
    --mount=type=cache,target=/root/.cache/pip \
    pip install "/tmp/src[orchestrator]" \
    && python -c "import importlib.util, sys; sys.exit('torch must not be installed' if importlib.util.find_spec('torch') else 0)"
USER 10001:10001
WORKDIR /home/chorus
EXPOSE 9200
# /metrics answers from the moment the daemon starts, before it has reached SQS or any synth server.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/chorus/healthcheck.py", "http"]
ENTRYPOINT ["chorus-orchestrator"]
CMD ["run"]
