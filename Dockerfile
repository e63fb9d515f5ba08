# syntax=docker/dockerfile:1
# LayerTracer images (multi-stage; pick one with --target):
#   api     the API and the dashboard: slim, WITHOUT torch (the web parts never import it)
#   worker  a GPU worker: CUDA torch + the engine + the job plumbing (--build-arg TORCH_INDEX for CPU)
#   engine  the library and CLI alone
# docker-compose.yml builds and wires them (postgres, redis, api, dashboard, worker).

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 HF_HOME=/cache/huggingface LAYERTRACER_DATA_DIR=/data
WORKDIR /app
RUN useradd --create-home --uid 1000 layertracer \
    && mkdir -p /data /models /cache/huggingface && chown layertracer /data /cache/huggingface

# The API/dashboard requirements, read from pyproject.toml's `service` and `dashboard` extras so the list
# lives in one place. The package itself is then installed with --no-deps: its core dependencies
# (torch, transformers, ...) are the engine's, which the web image must not carry.
FROM base AS api
COPY pyproject.toml README.md constraints.txt ./
RUN python -c "import tomllib; extras = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; print('\n'.join(sorted(set(extras['service'] + extras['dashboard']))))" > /tmp/requirements-api.txt \
    && pip install -c constraints.txt -r /tmp/requirements-api.txt
COPY layertracer ./layertracer
COPY backend ./backend
COPY frontend ./frontend
COPY service ./service
# plotly.js's cartesian bundle (frontend/plotly_bundle.py): a third of the full bundle the browser evaluates.
ENV LAYERTRACER_PLOTLY_BUNDLE=/app/vendor/plotly-cartesian.min.js
RUN pip install --no-deps . \
    && python -c "import importlib.util, sys; sys.exit('torch found in the api image' if importlib.util.find_spec('torch') else 0)" \
    && python -m frontend.plotly_bundle
USER layertracer
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=4)"
# uvicorn directly: the `layertracer` CLI belongs to the engine (it imports torch).
CMD ["python", "-m", "uvicorn", "service.app:create_api_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]

# A GPU worker: torch first, pinned, from the chosen index (a bare "torch" resolves to whatever is newest);
# everything else at the versions of the lock file (constraints.txt, written by scripts/lock).
FROM base AS worker
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md constraints.txt ./
COPY layertracer ./layertracer
COPY backend ./backend
COPY worker ./worker
COPY service ./service
# lm-eval: benchmarks named lm-eval:TASK run in the worker, so its image carries the harness.
RUN pip install -c constraints.txt ".[service,gpu,lm-eval]"
USER layertracer
VOLUME ["/data", "/models", "/cache/huggingface"]
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD python -m celery -A worker.app inspect ping -d "celery@$HOSTNAME" --timeout 10 >/dev/null || exit 1
CMD ["layertracer", "worker", "--queues", "trace,train"]

FROM base AS engine
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md constraints.txt ./
COPY layertracer ./layertracer
RUN pip install -c constraints.txt ".[gpu]"
USER layertracer
VOLUME ["/data", "/models"]
ENTRYPOINT ["layertracer"]
CMD ["--help"]
