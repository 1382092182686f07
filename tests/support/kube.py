"""Kubernetes checks without a cluster: Helm and kustomize renders, schemas, the Serve config.

Core kinds are checked by ``kubernetes-validate`` against the API's own schemas; the KubeRay
kinds against the CRDs in ``../shared/k8s/crds/``, converted to JSON Schema here; the
``serveConfigV2`` of a RayService against Ray Serve's config schema and Prism's builder.
"""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve._private.build_app import BuiltApplication, build_app
from ray.serve.schema import ServeDeploySchema

from prism.config import PlatformConfig, parse_config
from prism.serving.grpc_service import GRPC_SERVICERS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "prism"
KUSTOMIZE = ROOT / "k8s"
CRDS = ROOT.parent / "shared" / "k8s" / "crds"
BIN = Path(sys.executable).parent
HELM = BIN / "helm"
KUBECTL = BIN / "kubectl"
KUBERNETES_VERSION = "1.32.0"
RELEASE = "prism"
NAMESPACE = "llm"

Manifest = dict


class RenderError(AssertionError):
    """A render that failed; the message is the tool's own error output."""


def _run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip() or result.stdout.strip())
    return result.stdout


def _documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def helm_lint(values: Path | None = None) -> str:
    """``helm lint --strict`` of the chart with ``values`` (the defaults when None)."""
    extra = ["--values", str(values)] if values else []
    return _run([str(HELM), "lint", "--strict", str(CHART), *extra])


def helm_template(values: Path | None = None, *settings: str) -> list[Manifest]:
    """The chart's objects as ``helm template`` renders them; ``settings`` are ``--set`` pairs."""
    command = [str(HELM), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values:
        command += ["--values", str(values)]
    for setting in settings:
        command += ["--set", setting]
    return _documents(_run(command))


def kustomize_build(overlay: Path) -> list[Manifest]:
    """The objects ``kubectl kustomize`` builds from ``overlay``."""
    return _documents(_run([str(KUBECTL), "kustomize", str(overlay)]))


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def _json_schema(node: object) -> object:
    """An ``openAPIV3Schema`` node as JSON Schema: listed properties only, int-or-string."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {
        key: _json_schema(value)
        for key, value in node.items()
        # CEL rules compare against the stored object (oldSelf): nothing to check offline.
        if not key.startswith("x-kubernetes-") and key != "nullable"
    }
    if node.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    listed = "properties" in node and "additionalProperties" not in node
    if listed and not node.get("x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
    return schema


@cache
def crd_validator(kind: str, version: str = "v1") -> jsonschema.protocols.Validator:
    """A JSON Schema validator for one KubeRay kind (e.g. ``RayService``) at ``version``."""
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        if crd["spec"]["names"]["kind"] != kind:
            continue
        for served in crd["spec"]["versions"]:
            if served["name"] == version:
                schema = _json_schema(served["schema"]["openAPIV3Schema"])
                jsonschema.Draft202012Validator.check_schema(schema)
                return jsonschema.Draft202012Validator(schema)
    raise LookupError(f"no CRD for {kind} {version} in {CRDS}")


def crd_errors(manifest: Manifest) -> list[str]:
    """What the KubeRay CRD schema finds wrong with ``manifest`` (empty: valid)."""
    version = manifest["apiVersion"].split("/")[1]
    validator = crd_validator(manifest["kind"], version)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]


def core_errors(manifest: Manifest) -> str | None:
    """``kubernetes-validate --strict`` of a core-API object; None when it is valid."""
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{manifest['kind']}/{manifest['metadata']['name']}: {error}"
    return None


CORE_GROUPS = ("v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1")
UNCHECKED_GROUPS = ("monitoring.coreos.com/v1", "gateway.networking.k8s.io/v1")
"""Other operators' kinds (Prometheus Operator, Gateway API): no schema here to check."""


def validate_manifests(manifests: list[Manifest]) -> None:
    """Every core object valid for Kubernetes, every KubeRay object valid for its CRD."""
    problems = []
    for manifest in manifests:
        api = manifest["apiVersion"]
        if api in CORE_GROUPS:
            problems.append(core_errors(manifest))
        elif api.startswith("ray.io/"):
            problems += crd_errors(manifest)
        elif api not in UNCHECKED_GROUPS:
            problems.append(f"{manifest['kind']}: no schema to check {api} against")
    problems = [problem for problem in problems if problem]
    assert not problems, "\n".join(problems)


def serve_config(rayservice: Manifest) -> dict:
    """The RayService's ``serveConfigV2``, checked against Ray Serve's own config schema."""
    raw = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(raw)
    return raw


def platform_of(rayservice: Manifest) -> tuple[PlatformConfig, BuiltApplication]:
    """The platform config Prism's application is built from, and its deployments as Serve
    would deploy them (names, replica and autoscaling configs, placement groups).

    Also checks what the proxies need: Prism's builder, and its gRPC services when gRPC is on.
    """
    config = serve_config(rayservice)
    (application,) = config["applications"]
    assert application["import_path"] == "prism.serving.app:platform_app"
    platform = parse_config(application["args"], "serveConfigV2")
    if platform.grpc.enabled:
        grpc = config["grpc_options"]
        assert grpc["grpc_servicer_functions"] == GRPC_SERVICERS
        assert grpc["port"] == platform.grpc.port
    assert config["http_options"]["port"] == platform.http.port
    module, name = application["import_path"].split(":")
    builder = getattr(__import__(module, fromlist=[name]), name)
    built = call_user_app_builder_with_args_if_necessary(builder, application["args"])
    return platform, build_app(built, name=application["name"])
