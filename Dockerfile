# syntax=docker/dockerfile:1
# LayerTracer images.
#   engine: the library and CLI with PyTorch (CUDA build by default; --build-arg TORCH_INDEX for CPU).
# The service images (a slim API/dashboard image without torch, and the GPU worker) are added with the
# service itself; they build on the same base stage.

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 LAYERTRACER_DATA_DIR=/data
WORKDIR /app
RUN useradd --create-home --uid 1000 layertracer && mkdir -p /data /models && chown layertracer /data

FROM base AS engine
# torch first, pinned, from the chosen index: a bare "torch" would resolve to whatever is newest.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY layertracer ./layertracer
RUN pip install .
USER layertracer
VOLUME ["/data", "/models"]
ENTRYPOINT ["layertracer"]
CMD ["--help"]
