# srcube image: the library, the CLI, the Prefect flows and the Kubernetes extras
# (Dask scheduler/workers, Prefect worker and flow-run Jobs all run this image; see k8s/README.md).
#
#   docker build -t ghcr.io/srcube/srcube:0.1.0 .                                            # CPU torch
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#                -t ghcr.io/srcube/srcube:0.1.0 .                                             # CUDA torch

# The base image by digest (the multi-platform index of python:3.11-slim), so a rebuild gets the same OS and
# Python, whatever the tag points at now. Refresh it deliberately, for security updates:
#   docker buildx imagetools inspect python:3.11-slim      # "Digest:" line
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# Empty: the CPU torch wheel through constraints.txt. A PyTorch wheel index (e.g.
# https://download.pytorch.org/whl/cu128) installs the CUDA build of the same pinned version.
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# uid/gid 1000: the Kubernetes manifests run every container with runAsUser 1000, runAsNonRoot.
RUN groupadd --gid 1000 srcube \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/srcube --shell /usr/sbin/nologin srcube

WORKDIR /opt/srcube

# torch first, alone (its own layer: the big one, changes rarely), pinned by constraints.txt.
COPY constraints.txt ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install -c constraints.txt --index-url "$TORCH_INDEX_URL" torch==2.13.0; \
    else \
        pip install -c constraints.txt torch==2.13.0; \
    fi

COPY pyproject.toml README.md prefect.yaml ./
COPY pipeline/ pipeline/
COPY flows/ flows/
COPY models/ models/
COPY training/ training/
COPY cli/ cli/
COPY srcube/ srcube/

# Editable install: the code stays at /opt/srcube, where prefect.yaml's Kubernetes pull step runs
# flows from (srcube.flows.region is imported by name on the Dask workers too). The flows extra brings bokeh
# for the Dask dashboard (scheduler :8787, workers :8788).
RUN pip install -c constraints.txt -e ".[flows,k8s]" \
 && srcube --help > /dev/null

USER 1000:1000
ENV HOME=/home/srcube

CMD ["srcube", "--help"]
