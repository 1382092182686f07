"""The Helm chart: lint, render, validate and build Prism's application from each values file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from prism.chart_schema import VALUES_SCHEMA, platform_defs
from prism.serving.app import deployment_name
from support.kube import (
    CHART,
    HELM,
    NAMESPACE,
    RELEASE,
    Manifest,
    RenderError,
    core_errors,
    crd_errors,
    helm_lint,
    helm_template,
    of_kind,
    platform_of,
    serve_config,
    validate_manifests,
)

VALUES = {
    "default": None,
    "cpu-demo": CHART / "ci" / "cpu-demo-values.yaml",
    "gpu-tp4": CHART / "ci" / "gpu-tp4-values.yaml",
    "external-redis": CHART / "ci" / "external-redis-values.yaml",
}
FULLNAME = RELEASE  # the release is named after the chart, so objects take its name alone

_renders: dict[str, list[Manifest]] = {}


def render(name: str) -> list[Manifest]:
    """The chart rendered with one of the shipped values files (rendered once per session)."""
    if name not in _renders:
        _renders[name] = helm_template(VALUES[name])
    return _renders[name]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if name is None or m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(rayservice: Manifest) -> dict[str, dict]:
    """The head's and each worker group's pod spec, by group name (the head is ``head``)."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    specs = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    for group in cluster["workerGroupSpecs"]:
        specs[group["groupName"]] = group["template"]["spec"]
    return specs


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


@pytest.mark.parametrize("name", VALUES)
def test_chart_lints_strictly(name: str) -> None:
    assert "0 chart(s) failed" in helm_lint(VALUES[name])


@pytest.mark.parametrize("name", VALUES)
def test_rendered_objects_pass_kubernetes_and_kuberay_schemas(name: str) -> None:
    manifests = render(name)
    assert len(of_kind(manifests, "RayService")) == 1
    validate_manifests(manifests)


@pytest.mark.parametrize("name", VALUES)
def test_serve_config_parses_as_prism_config_and_builds_the_application(name: str) -> None:
    rayservice = one(render(name), "RayService")
    platform, application = platform_of(rayservice)
    deployments = {deployment.name for deployment in application.deployments}
    assert deployments == {"Ingress", *(deployment_name(model) for model in platform.models)}
    assert application.ingress_deployment_name == "Ingress"
    assert platform.http.host == "0.0.0.0"
    assert platform.redis.url


def test_values_schema_carries_the_current_platform_config_schema() -> None:
    committed = json.loads(VALUES_SCHEMA.read_text(encoding="utf-8"))["$defs"]
    assert committed == platform_defs(), "run `make chart-schema` after changing prism.config"


def test_head_takes_no_replicas_and_workers_get_their_gpus() -> None:
    rayservice = one(render("gpu-tp4"), "RayService")
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    specs = pod_specs(rayservice)
    assert "nvidia.com/gpu" not in json.dumps(specs["head"])
    (worker,) = specs["gpu-4x"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert {t["key"] for t in specs["gpu-4x"]["tolerations"]} == {"nvidia.com/gpu"}
    (group,) = cluster["workerGroupSpecs"]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (1, 1, 4)
    assert cluster["enableInTreeAutoscaling"] is True
    assert rayservice["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


def test_tensor_parallel_replica_is_one_strict_pack_group_that_fits_a_worker_pod() -> None:
    rayservice = one(render("gpu-tp4"), "RayService")
    platform, application = platform_of(rayservice)
    (server,) = [d for d in application.deployments if d.name.startswith("LLMServer:")]
    replica = server._replica_config
    assert replica.placement_group_strategy == "STRICT_PACK"
    assert len(replica.placement_group_bundles) == 4
    assert all(bundle["GPU"] == 1 for bundle in replica.placement_group_bundles)
    scaling = server._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas) == (1, 4)
    gpus_per_pod = pod_specs(rayservice)["gpu-4x"]["containers"][0]["resources"]["limits"]
    assert gpus_per_pod["nvidia.com/gpu"] % 4 == 0
    assert platform.models[0].engine.tensor_parallel_size == 4


def test_a_models_quantization_reaches_its_engine(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "platform: {models: [{id: m, source: s, "
        "engine: {quantization: int4, quantization_group_size: 64}}]}",
        encoding="utf-8",
    )

    platform, _ = platform_of(one(helm_template(values), "RayService"))

    engine = platform.models[0].engine
    assert (engine.quantization, engine.quantization_group_size) == ("int4", 64)


def test_bundled_redis_password_reaches_prism_from_the_secret_redis_reads() -> None:
    manifests = render("default")
    rayservice = one(manifests, "RayService")
    platform, _ = platform_of(rayservice)
    redis = one(manifests, "StatefulSet", f"{FULLNAME}-redis")
    service = one(manifests, "Service", f"{FULLNAME}-redis")
    assert platform.redis.url == f"redis://{service['metadata']['name']}:6379/0"
    assert platform.redis.password_env == "PRISM_REDIS_PASSWORD"
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    server_ref = env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    secret = one(manifests, "Secret", server_ref["name"])
    assert server_ref["key"] in secret["data"]
    for name, spec in pod_specs(rayservice).items():
        prism_ref = env_of(spec["containers"][0])["PRISM_REDIS_PASSWORD"]["valueFrom"]
        assert prism_ref["secretKeyRef"] == server_ref, name
    assert (
        service["spec"]["selector"].items()
        <= redis["spec"]["template"]["metadata"]["labels"].items()
    )


def test_external_redis_replaces_the_bundled_one() -> None:
    manifests = render("external-redis")
    assert not of_kind(manifests, "StatefulSet")
    platform, _ = platform_of(one(manifests, "RayService"))
    assert platform.redis.url == "rediss://redis.shared.svc.cluster.local:6380/2"
    assert platform.redis.key_prefix == "prism-prod"
    head = pod_specs(one(manifests, "RayService"))["head"]["containers"][0]
    ref = env_of(head)["PRISM_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "shared-redis", "key": "redis-password"}


def test_services_expose_http_grpc_and_the_dashboard() -> None:
    manifests = render("default")
    rayservice = one(manifests, "RayService")
    serve = rayservice["spec"]["serveService"]
    ports = {port["name"]: port["port"] for port in serve["spec"]["ports"]}
    assert ports == {"http": 8000, "grpc": 9000}
    dashboard = one(manifests, "Service", f"{FULLNAME}-dashboard")
    assert dashboard["spec"]["ports"][0]["port"] == 8265
    head = pod_specs(rayservice)["head"]["containers"][0]
    head_labels = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    assert dashboard["spec"]["selector"].items() <= head_labels["metadata"]["labels"].items()
    assert {"dashboard", "serve", "grpc", "metrics"} <= {p["name"] for p in head["ports"]}


def test_ingress_and_gateway_routes_send_traffic_to_the_serve_service() -> None:
    gpu = render("gpu-tp4")
    serve_name = one(gpu, "RayService")["spec"]["serveService"]["metadata"]["name"]
    ingress = one(gpu, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": serve_name, "port": {"name": "http"}}
    gateway = {"name": "public-gateway", "namespace": "gateway-system"}
    external = render("external-redis")
    for kind, port in (("HTTPRoute", 8000), ("GRPCRoute", 9000)):
        route = one(external, kind)
        assert route["spec"]["rules"][-1]["backendRefs"] == [
            {"name": f"{FULLNAME}-serve", "port": port}
        ]
        assert route["spec"]["parentRefs"] == [gateway]


def test_monitoring_objects_scrape_ray_pods_and_the_dashboard_embeds_grafana() -> None:
    gpu = render("gpu-tp4")
    monitor = one(gpu, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    head = pod_specs(one(gpu, "RayService"))["head"]["containers"][0]
    env = env_of(head)
    assert env["RAY_GRAFANA_HOST"]["value"].startswith("http://kube-prometheus-stack-grafana")
    assert env["RAY_GRAFANA_IFRAME_HOST"]["value"] == "https://grafana.example.com"
    assert env["RAY_PROMETHEUS_HOST"]["value"].endswith(":9090")
    external = render("external-redis")
    service_monitor = one(external, "ServiceMonitor")
    metrics = one(external, "Service", f"{FULLNAME}-metrics")
    assert (
        service_monitor["spec"]["selector"]["matchLabels"].items()
        <= metrics["metadata"]["labels"].items()
    )


def test_grafana_dashboards_ship_as_labelled_config_maps() -> None:
    maps = of_kind(render("default"), "ConfigMap")
    uids = set()
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((_, text),) = config_map["data"].items()
        uids.add(json.loads(text)["uid"])
    assert uids == {"prism-engine", "prism-router", "prism-autoscaling"}


def test_model_weights_download_onto_the_shared_cache_before_ray_starts() -> None:
    manifests = render("gpu-tp4")
    specs = pod_specs(one(manifests, "RayService"))
    assert specs["head"]["initContainers"] == specs["gpu-4x"]["initContainers"]
    spec = specs["gpu-4x"]
    (init,) = spec["initContainers"]
    script = init["args"][0]
    assert '"Qwen/Qwen2.5-14B-Instruct"' in script and '"/models/Qwen2.5-14B-Instruct"' in script
    assert env_of(init)["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    claim = {v["name"]: v for v in spec["volumes"]}["models"]["persistentVolumeClaim"]
    pvc = one(manifests, "PersistentVolumeClaim", claim["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_install_notes_say_how_to_reach_the_api() -> None:
    result = subprocess.run(
        [str(HELM), "install", RELEASE, str(CHART), "--dry-run=client", "-n", NAMESPACE],
        capture_output=True,
        text=True,
        check=True,
    )
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"port-forward svc/{FULLNAME}-serve 8000:8000 9000:9000" in notes
    assert '"model": "smollm2-135m-instruct"' in notes
    assert f"port-forward svc/{FULLNAME}-dashboard 8265:8265" in notes


INVALID = {
    "a model without a source": (
        "platform: {models: [{id: m}]}",
        "at '/platform/models/0': missing property 'source'",
    ),
    "tensor parallel size not dividing the pods' GPUs": (
        """
platform:
  models:
    - {id: m, source: /models/m, engine: {tensor_parallel_size: 4}, resources: {num_gpus: 1}}
workerGroups: [{name: gpu, replicas: 1, minReplicas: 0, maxReplicas: 2, gpus: 6}]
""",
        "tensor_parallel_size 4 x 1 GPU(s) per rank = 4 GPUs per replica",
    ),
    "a fraction of a GPU per tensor-parallel rank": (
        """
platform:
  models:
    - {id: m, source: /models/m, engine: {tensor_parallel_size: 2}, resources: {num_gpus: 0.5}}
""",
        "at '/platform/models/0/resources/num_gpus': multipleOf",
    ),
    "GPUs asked for with no GPU worker group": (
        "platform: {models: [{id: m, source: /models/m, resources: {num_gpus: 1}}]}",
        "asks for GPUs, but no worker group has gpus > 0",
    ),
    "a tensor-parallel replica with more CPUs than a pod has": (
        """
platform:
  models:
    - {id: m, source: /models/m, engine: {tensor_parallel_size: 4},
       resources: {num_gpus: 1, num_cpus: 8}}
workerGroups:
  - {name: gpu, replicas: 1, minReplicas: 0, maxReplicas: 2, gpus: 4,
     resources: {limits: {cpu: "16000m"}}}
""",
        "a replica needs 32 CPUs on one pod (tensor_parallel_size 4 x num_cpus 8)",
    ),
    "more GPUs for one replica than a pod has": (
        """
platform: {models: [{id: m, source: s, resources: {num_gpus: 2}}]}
workerGroups: [{name: gpu, replicas: 1, minReplicas: 0, maxReplicas: 2, gpus: 1}]
""",
        "a replica needs 2 GPUs, more than any worker group's pods have ([1])",
    ),
    "no Redis at all": ("redis: {enabled: false}", "at '/externalRedis/url': minLength"),
    "a misspelt engine setting": (
        "platform: {models: [{id: m, source: s, engine: {tensor_paralel_size: 2}}]}",
        "additional properties 'tensor_paralel_size' not allowed",
    ),
    "a setting the chart owns": (
        "platform: {models: [{id: m, source: s}], redis: {url: 'redis://x:6379'}}",
        "additional properties 'url' not allowed",
    ),
    "an unknown routing policy": (
        "platform: {models: [{id: m, source: s}], router: {policy: fastest}}",
        "at '/platform/router/policy'",
    ),
    "an unknown quantization": (
        "platform: {models: [{id: m, source: s, engine: {quantization: int3}}]}",
        "at '/platform/models/0/engine/quantization'",
    ),
    "a KV cache size that is not a size": (
        "platform: {models: [{id: m, source: s, engine: {kv_cache_bytes: lots}}]}",
        "'lots' does not match pattern",
    ),
    "worker replicas outside their bounds": (
        "workerGroups: [{name: cpu, replicas: 3, minReplicas: 1, maxReplicas: 2, gpus: 0}]",
        'workerGroups "cpu": need minReplicas <= replicas <= maxReplicas',
    ),
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_values_are_rejected_with_a_clear_message(case: str, tmp_path: Path) -> None:
    text, message = INVALID[case]
    values = tmp_path / "values.yaml"
    values.write_text(text, encoding="utf-8")
    with pytest.raises(RenderError) as rejected:
        helm_template(values)
    assert message in str(rejected.value)


def test_validation_catches_unknown_fields_in_kuberay_and_core_objects() -> None:
    manifests = render("default")
    rayservice = json.loads(json.dumps(one(manifests, "RayService")))
    rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "many"
    problems = crd_errors(rayservice)
    assert any("rayStartParam" in problem for problem in problems)
    assert any("maxReplicas" in problem for problem in problems)
    redis = json.loads(json.dumps(one(manifests, "StatefulSet")))
    redis["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    assert "imagePullPolice" in (core_errors(redis) or "")


def test_without_grpc_the_chart_serves_http_only_and_probes_over_http() -> None:
    manifests = helm_template(None, "platform.grpc.enabled=false")
    rayservice = one(manifests, "RayService")
    platform, _ = platform_of(rayservice)
    assert not platform.grpc.enabled
    assert "grpc_options" not in serve_config(rayservice)
    ports = [port["name"] for port in rayservice["spec"]["serveService"]["spec"]["ports"]]
    assert ports == ["http"]
    (worker,) = pod_specs(rayservice)["cpu"]["containers"]
    assert worker["readinessProbe"]["httpGet"] == {"path": "/-/healthz", "port": 8000}
    assert "grpc" not in {port["name"] for port in worker["ports"]}
    validate_manifests(manifests)
