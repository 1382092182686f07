"""The Helm chart: lint, render, validate and build Prism's application from each values file."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from prism.chart_schema import VALUES_SCHEMA, platform_defs
from prism.serving.app import deployment_name
from support.kube import (
    CHART,
    CRDS,
    HELM,
    NAMESPACE,
    RELEASE,
    ROOT,
    Manifest,
    RenderError,
    core_errors,
    crd_errors,
    helm_lint,
    helm_template,
    of_kind,
    platform_of,
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


def declared_resources(ray_start_params: dict) -> dict[str, float]:
    """The custom resources a node declares: rayStartParams' ``resources``, a quoted JSON."""
    return json.loads(json.loads(ray_start_params.get("resources", '"{}"')))


@pytest.mark.parametrize("values", ["default", "gpu-tp4"])
def test_ingress_replicas_ask_for_a_resource_only_worker_pods_declare(values: str) -> None:
    """Prism's ingress asks for no CPU: without this, Ray may place it on the head, where a
    head pod's restart would take it and its requests down."""
    rayservice = one(render(values), "RayService")
    _, application = platform_of(rayservice)
    (ingress,) = [d for d in application.deployments if d.name == "Ingress"]
    wanted = ingress._replica_config.ray_actor_options["resources"]
    cluster = rayservice["spec"]["rayClusterConfig"]

    assert wanted, "the ingress asks for no custom resource"
    assert not set(wanted) & set(declared_resources(cluster["headGroupSpec"]["rayStartParams"]))
    for group in cluster["workerGroupSpecs"]:
        declared = declared_resources(group["rayStartParams"])
        assert all(declared.get(name, 0) >= amount for name, amount in wanted.items())


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
    manifests = render("cpu-demo")  # redis.auth.password: the chart makes the Secret
    rayservice = one(manifests, "RayService")
    platform, _ = platform_of(rayservice)
    redis = one(manifests, "StatefulSet", f"{FULLNAME}-redis")
    service = one(manifests, "Service", f"{FULLNAME}-redis")
    assert platform.redis.url == f"redis://{service['metadata']['name']}:6379/0"
    assert platform.redis.password_env == "PRISM_REDIS_PASSWORD"
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    server_ref = env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    secret = one(manifests, "Secret", server_ref["name"])
    assert base64.b64decode(secret["data"][server_ref["key"]]) == b"demo-redis-change-me"
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
    "one GCS namespace shared by the clusters of an upgrade": (
        "gcsFaultTolerance: {externalStorageNamespace: prism}",
        "gcsFaultTolerance.externalStorageNamespace with upgradeStrategy NewCluster",
    ),
    "a prefix index inside the GCS's keys": (
        "platform: {models: [{id: m, source: s}], redis: {key_prefix: RAYindex}}",
        'platform.redis.key_prefix "RAYindex": keys starting with RAY are the GCS\'s',
    ),
    "a GCS address with a database number": (
        "gcsFaultTolerance: {redisAddress: 'redis://r:6379/1'}",
        "at '/gcsFaultTolerance/redisAddress'",
    ),
    "a download Job with no shared claim": (
        "huggingFace: {download: [{repo: org/model}]}",
        "huggingFace.downloadMode job downloads once onto a shared claim",
    ),
    "a Ray without the dashboard agent's /api/healthz": (
        'rayVersion: "2.52.0"',
        "rayVersion 2.52.0: the probes use the dashboard agent's /api/healthz",
    ),
    "the old one-level disruption budget": (
        "podDisruptionBudget: {enabled: true, maxUnavailable: 1}",
        "at '/podDisruptionBudget': additional properties",
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


# --- probes ----------------------------------------------------------------------------------


def ray_containers(rayservice: Manifest) -> dict[str, dict]:
    """The Ray container (KubeRay's index 0) of the head and of each worker group."""
    return {name: spec["containers"][0] for name, spec in pod_specs(rayservice).items()}


def window_s(probe: dict) -> int:
    """How long a probe fails before Kubernetes acts on it (at most one period later)."""
    return probe["periodSeconds"] * probe["failureThreshold"]


@pytest.mark.parametrize("grpc", [True, False], ids=["grpc", "http-only"])
def test_a_worker_is_ready_while_its_own_serve_proxy_is_healthy(grpc: bool) -> None:
    manifests = helm_template(None, f"platform.grpc.enabled={str(grpc).lower()}")
    rayservice = one(manifests, "RayService")
    (worker,) = pod_specs(rayservice)["cpu"]["containers"][:1]
    readiness = worker["readinessProbe"]
    # The node-local proxy health check, never the application's gRPC health service (which
    # a model elsewhere being down would turn NOT_SERVING on every pod).
    assert readiness["httpGet"] == {"path": "/-/healthz", "port": 8000}
    assert "grpc" not in readiness and "exec" not in readiness
    # KubeRay finds the serving port by this name.
    assert {"name": "serve", "containerPort": 8000} in worker["ports"]
    # A draining or dead proxy leaves the Service within seconds (a draining proxy keeps
    # serving for 30 s); a single slow answer does not.
    assert 2 <= readiness["periodSeconds"] <= 5
    assert 1 <= readiness["failureThreshold"] <= 2
    assert window_s(readiness) <= 10
    assert readiness["timeoutSeconds"] <= readiness["periodSeconds"]
    assert ("grpc" in {port["name"] for port in worker["ports"]}) is grpc
    validate_manifests(manifests)


def test_liveness_watches_the_raylet_and_is_more_tolerant_than_readiness() -> None:
    rayservice = one(render("default"), "RayService")
    containers = ray_containers(rayservice)
    for name, container in containers.items():
        liveness = container["livenessProbe"]
        assert liveness["httpGet"] == {"path": "/api/healthz", "port": 52365}, name
        assert window_s(liveness) >= 60, name
        assert window_s(liveness) > window_s(container["readinessProbe"]), name
        # Not the Serve proxy: a worker without replicas drains it by design.
        assert liveness["httpGet"]["path"] != "/-/healthz", name
    head_readiness = containers["head"]["readinessProbe"]
    assert head_readiness["httpGet"] == {"path": "/api/healthz", "port": 52365}


def test_every_ray_container_has_both_probes_so_kuberay_injects_none() -> None:
    for name in VALUES:
        for group, container in ray_containers(one(render(name), "RayService")).items():
            assert container.get("readinessProbe") and container.get("livenessProbe"), (
                name,
                group,
            )


def test_agent_probes_follow_a_moved_dashboard_agent_port(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        """
head: {rayStartParams: {dashboard-agent-listen-port: "52400"}}
workerGroups:
  - {name: cpu, replicas: 1, minReplicas: 1, maxReplicas: 2, gpus: 0,
     resources: {limits: {cpu: "2"}}, rayStartParams: {dashboard-agent-listen-port: "52401"}}
""",
        encoding="utf-8",
    )
    containers = ray_containers(one(helm_template(values), "RayService"))
    assert containers["head"]["livenessProbe"]["httpGet"]["port"] == 52400
    assert containers["head"]["readinessProbe"]["httpGet"]["port"] == 52400
    assert containers["cpu"]["livenessProbe"]["httpGet"]["port"] == 52401
    assert containers["cpu"]["readinessProbe"]["httpGet"]["port"] == 8000


# --- GCS fault tolerance ---------------------------------------------------------------------


def gcs_options(rayservice: Manifest) -> dict | None:
    return rayservice["spec"]["rayClusterConfig"].get("gcsFaultToleranceOptions")


def test_gcs_fault_tolerance_uses_the_charts_redis_by_default() -> None:
    manifests = render("default")
    rayservice = one(manifests, "RayService")
    options = gcs_options(rayservice)
    assert options is not None
    host, port = options["redisAddress"].split(":")
    service = one(manifests, "Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    redis = one(manifests, "StatefulSet", host)
    (server,) = redis["spec"]["template"]["spec"]["containers"]
    server_ref = env_of(server)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert options["redisPassword"] == {"valueFrom": {"secretKeyRef": server_ref}}
    # KubeRay then names the keyspace after each RayCluster's UID: the clusters of a
    # NewCluster upgrade never share one.
    assert "externalStorageNamespace" not in options
    # What KubeRay refuses beside gcsFaultToleranceOptions.
    head = ray_containers(rayservice)["head"]
    assert not {"REDIS_PASSWORD", "RAY_REDIS_ADDRESS"} & set(env_of(head))
    assert (
        "redis-password"
        not in rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]
    )
    # The GCS's keys (RAY<namespace>@...) stay apart from the prefix index's.
    platform, _ = platform_of(rayservice)
    assert not platform.redis.key_prefix.startswith("RAY")
    # Redis never evicts (the GCS's state must stay).
    assert "--maxmemory-policy noeviction" in server["args"][0]


def test_gcs_fault_tolerance_on_an_external_redis() -> None:
    rayservice = one(render("external-redis"), "RayService")
    assert gcs_options(rayservice) == {
        "redisAddress": "rediss://redis.shared.svc.cluster.local:6380",
        "redisPassword": {
            "valueFrom": {"secretKeyRef": {"name": "shared-redis", "key": "redis-password"}}
        },
    }
    head = ray_containers(rayservice)["head"]
    assert env_of(head)["RAY_REDIS_CA_CERT"]["value"] == "/etc/redis-ca/ca.crt"


def test_gcs_fault_tolerance_can_be_turned_off_or_given_its_own_namespace() -> None:
    off = one(helm_template(None, "gcsFaultTolerance.enabled=false"), "RayService")
    assert gcs_options(off) is None
    # On by default only where the chart's Redis is there for it, or an address is given.
    no_redis = helm_template(None, "redis.enabled=false", "externalRedis.url=redis://r:6379/0")
    assert gcs_options(one(no_redis, "RayService")) is None
    named = one(
        helm_template(
            None, "gcsFaultTolerance.externalStorageNamespace=prism", "upgradeStrategy.type=None"
        ),
        "RayService",
    )
    options = gcs_options(named)
    assert options is not None and options["externalStorageNamespace"] == "prism"


# --- stable rendering ------------------------------------------------------------------------

NONDETERMINISTIC = re.compile(
    r"\b(lookup|randAlpha|randAlphaNum|randAscii|randNumeric|randBytes|randInt|uuidv4|now|"
    r"genCA|genPrivateKey|genSelfSignedCert|genSignedCert|derivePassword)\b"
)


@pytest.mark.parametrize("name", VALUES)
def test_two_renders_of_the_same_values_are_identical(name: str) -> None:
    command = [str(HELM), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if VALUES[name]:
        command += ["--values", str(VALUES[name])]
    first, second = (
        subprocess.run(command, capture_output=True, text=True, check=True).stdout for _ in range(2)
    )
    assert first == second


def test_no_template_reads_the_cluster_or_makes_up_values() -> None:
    for template in sorted((CHART / "templates").iterdir()):
        found = NONDETERMINISTIC.findall(template.read_text(encoding="utf-8"))
        assert not found, f"{template.name}: {found}"


def test_the_redis_password_is_a_secret_you_name_or_a_value_never_a_made_up_one() -> None:
    # Neither: the pods read <release>-redis, which the chart does not make.
    manifests = render("default")
    assert not of_kind(manifests, "Secret")
    redis = one(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(redis)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULLNAME}-redis",
        "key": "password",
    }
    # A Secret of yours.
    mine = helm_template(None, "redis.auth.existingSecret=vault-redis")
    assert not of_kind(mine, "Secret")
    head = ray_containers(one(mine, "RayService"))["head"]
    ref = env_of(head)["PRISM_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "vault-redis", "key": "password"}
    gcs = gcs_options(one(mine, "RayService"))
    assert gcs is not None and gcs["redisPassword"]["valueFrom"]["secretKeyRef"] == ref


# --- escape hatches --------------------------------------------------------------------------

EXTRAS = """
serviceAccount: {create: true, name: prism-pods, annotations: {iam.example.com/role: serve}}
extraEnv: [{name: EVERY_POD, value: "1"}]
envFrom: [{configMapRef: {name: every-pod}}]
extraVolumes: [{name: every-pod, configMap: {name: every-pod}}]
extraVolumeMounts: [{name: every-pod, mountPath: /etc/every-pod}]
"""
GROUP_EXTRAS = """
    extraEnv: [{{name: ONLY_{key}, value: "1"}}]
    envFrom: [{{secretRef: {{name: {key}-env}}}}]
    extraVolumes: [{{name: {key}-extra, emptyDir: {{}}}}]
    extraVolumeMounts: [{{name: {key}-extra, mountPath: /extra/{key}}}]
    sidecars:
      - {{name: {key}-sidecar, image: "busybox:1.37",
         resources: {{limits: {{cpu: 50m, memory: 32Mi}}}}}}
    nodeSelector: {{pool: {key}}}
    tolerations: [{{key: pool, operator: Equal, value: {key}, effect: NoSchedule}}]
    affinity: {{podAntiAffinity: {{preferredDuringSchedulingIgnoredDuringExecution: [{{weight: 1,
      podAffinityTerm: {{topologyKey: kubernetes.io/hostname,
        labelSelector: {{matchLabels: {{team: {key}}}}}}}}}]}}}}
    topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway,
         labelSelector: {{matchLabels: {{team: {key}}}}}}}
    priorityClassName: {key}-priority
    podAnnotations: {{team.example.com/owner: {key}}}
    podLabels: {{team: {key}}}
"""


@pytest.fixture(scope="module")
def with_extras(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    """The chart with every extra set: the shared ones, and each group's own."""
    worker = (
        "  - name: cpu\n    replicas: 1\n    minReplicas: 1\n    maxReplicas: 2\n"
        "    gpus: 0\n    resources: {limits: {cpu: '2'}}"
    )
    groups = (
        f"head:{GROUP_EXTRAS.format(key='head')}"
        f"workerGroups:\n{worker}{GROUP_EXTRAS.format(key='cpu')}"
        f"redis:\n    enabled: true{GROUP_EXTRAS.format(key='redis')}"
    )
    values = tmp_path_factory.mktemp("extras") / "values.yaml"
    values.write_text(EXTRAS + groups, encoding="utf-8")
    manifests = helm_template(values)
    validate_manifests(manifests)
    return manifests


def _pod_templates_by_group(manifests: list[Manifest]) -> dict[str, dict]:
    cluster = one(manifests, "RayService")["spec"]["rayClusterConfig"]
    return {
        "head": cluster["headGroupSpec"]["template"],
        "cpu": cluster["workerGroupSpecs"][0]["template"],
        "redis": one(manifests, "StatefulSet")["spec"]["template"],
    }


@pytest.mark.parametrize("key", ["head", "cpu", "redis"])
def test_each_group_takes_its_own_extras_placement_and_metadata(
    with_extras: list[Manifest], key: str
) -> None:
    template = _pod_templates_by_group(with_extras)[key]
    spec = template["spec"]
    main, sidecar = spec["containers"]
    assert env_of(main)[f"ONLY_{key}"]["value"] == "1"
    assert {"secretRef": {"name": f"{key}-env"}} in main["envFrom"]
    assert {"name": f"{key}-extra", "emptyDir": {}} in spec["volumes"]
    assert {"name": f"{key}-extra", "mountPath": f"/extra/{key}"} in main["volumeMounts"]
    assert sidecar["name"] == f"{key}-sidecar"
    # A sidecar without a securityContext of its own gets the chart's restricted one.
    assert sidecar["securityContext"]["allowPrivilegeEscalation"] is False
    assert sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["nodeSelector"] == {"pool": key}
    assert spec["tolerations"][0]["value"] == key
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == {"team": key}
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert spec["priorityClassName"] == f"{key}-priority"
    assert template["metadata"]["annotations"] == {"team.example.com/owner": key}
    assert template["metadata"]["labels"]["team"] == key
    assert spec["serviceAccountName"] == "prism-pods"
    # Another group's extras stay in that group.
    others = {"head", "cpu", "redis"} - {key}
    assert not any(f"ONLY_{other}" in env_of(main) for other in others)


def test_every_ray_pod_takes_the_shared_extras_and_redis_does_not(
    with_extras: list[Manifest],
) -> None:
    templates = _pod_templates_by_group(with_extras)
    for key in ("head", "cpu"):
        main = templates[key]["spec"]["containers"][0]
        assert env_of(main)["EVERY_POD"]["value"] == "1"
        assert {"configMapRef": {"name": "every-pod"}} in main["envFrom"]
        assert {"name": "every-pod", "mountPath": "/etc/every-pod"} in main["volumeMounts"]
    redis = templates["redis"]["spec"]["containers"][0]
    assert "EVERY_POD" not in env_of(redis)


def test_the_service_account_is_made_or_named_and_only_the_head_mounts_its_token(
    with_extras: list[Manifest],
) -> None:
    account = one(with_extras, "ServiceAccount", "prism-pods")
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["annotations"] == {"iam.example.com/role": "serve"}
    templates = _pod_templates_by_group(with_extras)
    # The head runs KubeRay's autoscaler, which talks to the Kubernetes API.
    assert templates["head"]["spec"]["automountServiceAccountToken"] is True
    assert templates["cpu"]["spec"]["automountServiceAccountToken"] is False
    assert templates["redis"]["spec"]["automountServiceAccountToken"] is False

    existing = helm_template(None, "serviceAccount.create=false", "serviceAccount.name=ops")
    assert not of_kind(existing, "ServiceAccount")
    for spec in pod_specs(one(existing, "RayService")).values():
        assert spec["serviceAccountName"] == "ops"
    no_autoscaler = helm_template(None, "autoscaler.enabled=false")
    head = pod_specs(one(no_autoscaler, "RayService"))["head"]
    assert head["automountServiceAccountToken"] is False


# --- model download --------------------------------------------------------------------------


def _marker_of(script: str) -> str:
    (marker,) = set(re.findall(r'"(/[^"]*\.prism-downloads/[^"]+\.done)"', script))
    return marker


def test_the_model_is_downloaded_once_by_a_job_that_every_ray_pod_waits_for() -> None:
    manifests = render("gpu-tp4")
    (job,) = of_kind(manifests, "Job")
    pod = job["spec"]["template"]["spec"]
    (download,) = pod["containers"]
    script = download["args"][0]
    assert '"Qwen/Qwen2.5-14B-Instruct"' in script and '"/models/Qwen2.5-14B-Instruct"' in script
    marker = _marker_of(script)
    assert script.strip().endswith(f'touch "{marker}"')
    assert env_of(download)["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    claim = {v["name"]: v for v in pod["volumes"]}["models"]["persistentVolumeClaim"]
    pvc = one(manifests, "PersistentVolumeClaim", claim["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "readOnly" not in {m["name"]: m for m in download["volumeMounts"]}["models"]
    for group, spec in pod_specs(one(manifests, "RayService")).items():
        (wait,) = spec["initContainers"]
        assert wait["name"] == "wait-for-models", group
        assert _marker_of(wait["args"][0]) == marker, group
        assert "env" not in wait, group
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["models"]["persistentVolumeClaim"] == claim, group
        ray = spec["containers"][0]
        # Only the Job writes the weights, and only the containers that download get the token.
        assert {m["name"]: m for m in ray["volumeMounts"]}["models"]["readOnly"] is True, group
        assert "HF_TOKEN" not in env_of(ray), group


def test_the_download_jobs_name_follows_its_spec_and_the_marker_follows_the_download_list() -> None:
    gpu = VALUES["gpu-tp4"]

    def job_and_marker(*settings: str) -> tuple[str, str]:
        (job,) = of_kind(helm_template(gpu, *settings), "Job")
        return job["metadata"]["name"], _marker_of(
            job["spec"]["template"]["spec"]["containers"][0]["args"][0]
        )

    name, marker = job_and_marker()
    assert len(name) <= 63
    new_image_name, new_image_marker = job_and_marker("image.tag=0.2.0")
    assert new_image_name != name and new_image_marker == marker
    new_model_name, new_model_marker = job_and_marker("huggingFace.download[0].revision=abc123")
    assert new_model_name != name and new_model_marker != marker


def test_per_pod_downloads_remain_an_option() -> None:
    manifests = helm_template(VALUES["gpu-tp4"], "huggingFace.downloadMode=perPod")
    assert not of_kind(manifests, "Job")
    for group, spec in pod_specs(one(manifests, "RayService")).items():
        (download,) = spec["initContainers"]
        assert download["name"] == "download-models", group
        assert "hf download" in download["args"][0], group
        assert ".prism-downloads" not in download["args"][0], group
        assert env_of(download)["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
        assert download["resources"]["limits"], group
    validate_manifests(manifests)


# --- disruption budgets, deprecated fields, KubeRay's version --------------------------------


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def test_disruption_budgets_cover_the_workers_the_head_and_redis() -> None:
    manifests = render("default")
    budgets = {m["metadata"]["name"]: m["spec"] for m in of_kind(manifests, "PodDisruptionBudget")}
    templates = _pod_templates_by_group(manifests)
    labels = {key: template["metadata"]["labels"] for key, template in templates.items()}
    expected = {
        f"{FULLNAME}-workers": "cpu",
        f"{FULLNAME}-head": "head",
        f"{FULLNAME}-redis": "redis",
    }
    assert set(budgets) == set(expected)
    for name, group in expected.items():
        selected = {key for key, pod in labels.items() if _selects(budgets[name]["selector"], pod)}
        assert selected == {group}, name
        assert budgets[name]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert budgets[f"{FULLNAME}-workers"]["maxUnavailable"] == 1
    assert budgets[f"{FULLNAME}-head"]["maxUnavailable"] == 0
    assert budgets[f"{FULLNAME}-redis"]["maxUnavailable"] == 0
    external = {
        m["metadata"]["name"] for m in of_kind(render("external-redis"), "PodDisruptionBudget")
    }
    assert f"{FULLNAME}-redis" not in external


DEPRECATED_RAYSERVICE_FIELDS = {
    # KubeRay's RayServiceSpec: "Deprecated: This field is not used anymore" (kuberay#1685).
    "serviceUnhealthySecondThreshold",
    "deploymentUnhealthySecondThreshold",
}


def test_no_rayservice_field_that_kuberay_deprecated() -> None:
    crd = yaml.safe_load((CRDS / "ray.io_rayservices.yaml").read_text(encoding="utf-8"))
    (v1,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1"]
    # Still in the schema (objects that set them stay valid), but nothing reads them.
    spec_fields = set(v1["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])
    assert spec_fields >= DEPRECATED_RAYSERVICE_FIELDS
    for name in VALUES:
        assert not DEPRECATED_RAYSERVICE_FIELDS & set(one(render(name), "RayService")["spec"]), name


def kuberay_line() -> str:
    """The KubeRay release line the CRDs in ../shared/k8s/crds come from (their README)."""
    match = re.search(r"the v(\d+\.\d+) line", (CRDS / "README.md").read_text(encoding="utf-8"))
    assert match, "the CRDs' README names no KubeRay release line"
    return match.group(1)


@pytest.mark.parametrize("doc", ["docs/kubernetes.md", "k8s/README.md"])
def test_the_docs_name_the_kuberay_version_the_chart_is_checked_against(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    line = kuberay_line()
    mentions = [
        version
        for row in text.splitlines()
        if "kuberay" in row.lower()
        for version in re.findall(r"\bv?(1\.\d+)(?:\.\d+)?\b", row)
    ]
    assert mentions, f"{doc} names no KubeRay version"
    assert set(mentions) == {line}, mentions
    if doc == "docs/kubernetes.md":
        install = re.search(r"helm install kuberay-operator .*?--version (\S+)", text, re.S)
        assert install and install.group(1).startswith(line + ".")


# --- network policies ------------------------------------------------------------------------


def _open_ports(policy: dict, source: dict | None) -> set[int] | None:
    """The ports a policy opens to ``source`` (None: any port), over all its rules."""
    opened: set[int] = set()
    for rule in policy["spec"].get("ingress", []):
        if "from" in rule and source not in rule["from"]:
            continue
        if "ports" not in rule:
            return None
        opened |= {port["port"] for port in rule["ports"]}
    return opened


def test_network_policies_let_in_only_what_each_pod_serves() -> None:
    manifests = render("default")
    policies = {m["metadata"]["name"]: m for m in of_kind(manifests, "NetworkPolicy")}
    templates = _pod_templates_by_group(manifests)
    release = {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "prism",
                "app.kubernetes.io/instance": RELEASE,
            }
        }
    }
    operator = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}}
    }
    elsewhere = {"podSelector": {"matchLabels": {"app": "other"}}}
    for name, group in (("ray-head", "head"), ("ray-worker", "cpu"), ("redis", "redis")):
        policy = policies[f"{FULLNAME}-{name}"]
        selected = {
            key
            for key, template in templates.items()
            if _selects(policy["spec"]["podSelector"], template["metadata"]["labels"])
        }
        assert selected == {group}, name
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        # Every pod of the release reaches every port of a Ray pod (Ray nodes talk on many),
        # and Redis's port.
        assert _open_ports(policy, release) == ({6379} if name == "redis" else None), name
    assert _open_ports(policies[f"{FULLNAME}-ray-worker"], elsewhere) == {8000, 9000, 8080}
    assert _open_ports(policies[f"{FULLNAME}-ray-head"], elsewhere) == {8000, 9000, 8080}
    assert _open_ports(policies[f"{FULLNAME}-ray-head"], operator) == {8000, 9000, 8080, 8265}
    assert _open_ports(policies[f"{FULLNAME}-redis"], elsewhere) == set()
    # The download Job's pods take no connections.
    (job,) = of_kind(render("gpu-tp4"), "Job")
    download = one(render("gpu-tp4"), "NetworkPolicy", f"{FULLNAME}-model-download")
    assert _selects(download["spec"]["podSelector"], job["spec"]["template"]["metadata"]["labels"])
    assert "ingress" not in download["spec"]
    assert not of_kind(helm_template(None, "networkPolicy.enabled=false"), "NetworkPolicy")
