# The synth server on NVIDIA GPUs, with Bark's weights baked in so that a node starts without reaching the hub.
#
#   docker build -f deploy/docker/synth.Dockerfile -t chorus-synth .                        # suno/bark-small
#   docker build -f deploy/docker/synth.Dockerfile --build-arg MODEL=suno/bark -t chorus-synth:bark .
#   docker build -f deploy/docker/synth.Dockerfile --build-arg MODEL=none \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t chorus-synth:cpu .   # random:tiny on CPU
#
# Base: nvidia/cuda's *base* flavour, not runtime or cudnn-runtime. PyTorch's CUDA wheels bring their own CUDA
# runtime, cuBLAS and cuDNN (the nvidia-*-cu12 packages), so the bigger flavours would ship those libraries twice
# (~3 GB). What the base image adds over plain Ubuntu is what the NVIDIA container runtime reads: NVIDIA_VISIBLE_DEVICES,
# NVIDIA_DRIVER_CAPABILITIES and NVIDIA_REQUIRE_CUDA, which refuses a host driver too old for the wheels with a clear
# error instead of a CUDA failure at the first request. CUDA 12.8 (cu128 wheels) runs every GPU from Turing to
# Blackwell (RTX 50xx needs it) and wants a driver >= 570; for hosts on the 560 branch build with
# CUDA_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04 and TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126.
# Ubuntu 24.04 brings Python 3.12 (the project needs >= 3.11).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
ARG MODEL=suno/bark-small

# --- Weights: downloaded once per MODEL, in a stage of their own so that a code change never downloads them again.
FROM python:3.12-slim-bookworm AS weights
ARG MODEL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# CPU torch is enough to read and re-save the weights; transformers in the range of pyproject's synth extra.
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    mkdir -p /models \
    && if [ "$MODEL" != none ]; then \
         pip install --index-url https://download.pytorch.org/whl/cpu torch \
         && pip install "transformers>=5.0,<6"; \
       fi
RUN --mount=type=bind,source=deploy/docker/bake_model.py,target=/tmp/bake_model.py \
    if [ "$MODEL" != none ]; then \
      HF_HOME=/tmp/hf python /tmp/bake_model.py "$MODEL" /models && rm -rf /tmp/hf; \
    fi

# --- The server.
FROM ${CUDA_IMAGE}
ARG MODEL
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_SPEC=torch>=2.4
ENV DEBIAN_FRONTEND=noninteractive \
    VIRTUAL_ENV=/opt/chorus/venv \
    PATH=/opt/chorus/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Ubuntu's own Python: its version is the release's, pinned by the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 chorus \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin chorus \
    && python3 -m venv "$VIRTUAL_ENV"
# torch first, from PyTorch's index: the synth extra leaves torch to the installer, and `pip install .[synth]` below
# then finds it already satisfied instead of taking PyPI's build. TORCH_SPEC pins it when wanted.
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
COPY --from=weights /models /models
# The server loads /models/baked: a link to the directory named after the model (/models/bark-small).
RUN if [ "$MODEL" != none ]; then ln -s "${MODEL##*/}" /models/baked; fi
# The project from the build context (the repository root; see .dockerignore), without keeping the sources.
RUN --mount=type=bind,source=.,target=/tmp/src,rw \
    --mount=type=cache,target=/root/.cache/pip \
    pip install "/tmp/src[synth]"
COPY deploy/docker/healthcheck.py /opt/chorus/healthcheck.py

# Every chorus-synth flag can be set as CHORUS_<FLAG> (docker run -e CHORUS_DEVICES=cuda:0); the ports stay at their
# defaults, [::]:50051 and :9100.
ENV HF_HUB_OFFLINE=1 \
    CHORUS_MODEL=/models/baked
USER 10001:10001
WORKDIR /home/chorus
EXPOSE 50051 9100
# Loading and warming up Bark takes a while (minutes for suno/bark on a slow disk): failures during the start period
# do not count, and the first SERVING ends it.
HEALTHCHECK --interval=15s --timeout=6s --start-period=10m --retries=3 \
    CMD ["python", "/opt/chorus/healthcheck.py", "grpc"]
ENTRYPOINT ["chorus-synth"]
