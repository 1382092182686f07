"""The plain manifests in k8s/: each overlay builds a complete, valid install of Prism.

The Redis password is the one object the user creates (``k8s/README.md``), so no password
is ever committed.
"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
import yaml
from ray.serve import Deployment
from ray.serve._private.build_app import BuiltApplication

from prism.config import PlatformConfig
from prism.serving.app import deployment_name
from support.kube import (
    CHART,
    KUSTOMIZE,
    Manifest,
    core_errors,
    helm_template,
    kustomize_build,
    of_kind,
    platform_of,
    serve_config,
    validate_manifests,
)

OVERLAYS = ("cpu-demo", "gpu")
REDIS_SECRET = {"name": "prism-redis", "key": "password"}
API_KEY_SECRET = {"name": "prism-api-key", "key": "api-key"}
USER_SECRETS = (REDIS_SECRET, API_KEY_SECRET)
"""Secrets the README has the user create before the first apply."""
"""The Secret the README has the user create before applying an overlay."""
# The chart's values that deploy what each overlay deploys (None: the chart's defaults).
CHART_VALUES = {"cpu-demo": None, "gpu": CHART / "ci" / "gpu-tp4-values.yaml"}
GPU = "nvidia.com/gpu"


@pytest.fixture(scope="module")
def builds() -> dict[str, list[Manifest]]:
    overlays = KUSTOMIZE / "overlays"
    built = {overlay: kustomize_build(overlays / overlay) for overlay in OVERLAYS}
    built["gpu/weights"] = kustomize_build(overlays / "gpu" / "weights")
    return built


@pytest.fixture(scope="module")
def platforms(
    builds: dict[str, list[Manifest]],
) -> dict[str, tuple[PlatformConfig, BuiltApplication]]:
    return {overlay: platform_of(_rayservice(builds[overlay])) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param


# --- reading the built objects ---------------------------------------------------------------


def _rayservice(manifests: list[Manifest]) -> Manifest:
    (rayservice,) = of_kind(manifests, "RayService")
    return rayservice


def _named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    (found,) = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    return found


def _head(rayservice: Manifest) -> dict:
    return rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]


def _worker_groups(rayservice: Manifest) -> list[dict]:
    return rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]


def _ray_pods(rayservice: Manifest) -> list[dict]:
    """The pod specs of the head and of each worker group."""
    groups = [_head(rayservice), *_worker_groups(rayservice)]
    return [group["template"]["spec"] for group in groups]


def _ray_containers(rayservice: Manifest) -> list[dict]:
    """The Ray container of each pod (KubeRay runs Ray in the first one)."""
    return [pod["containers"][0] for pod in _ray_pods(rayservice)]


def _pod_templates(manifests: list[Manifest]) -> list[dict]:
    """The pod templates of every object that makes pods, Ray's included."""
    templates = []
    for manifest in manifests:
        if manifest["kind"] == "RayService":
            groups = [_head(manifest), *_worker_groups(manifest)]
            templates += [group["template"] for group in groups]
        elif manifest["kind"] in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
            templates.append(manifest["spec"]["template"])
    return templates


def _env(container: dict, name: str) -> dict:
    (entry,) = [entry for entry in container.get("env", []) if entry["name"] == name]
    return entry


def _cpus(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _limits(pod: dict) -> dict:
    return pod["containers"][0]["resources"]["limits"]


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _required_references(pod: dict) -> set[tuple[str, str]]:
    """(kind, name) of every Secret, ConfigMap and claim the pod cannot start without."""
    needed = set()
    containers = pod.get("initContainers", []) + pod["containers"]
    for container in containers:
        for entry in container.get("env", []):
            source = entry.get("valueFrom", {})
            for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                ref = source.get(field)
                if ref and not ref.get("optional"):
                    needed.add((kind, ref["name"]))
        for entry in container.get("envFrom", []):
            for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                ref = entry.get(field)
                if ref and not ref.get("optional"):
                    needed.add((kind, ref["name"]))
    for volume in pod.get("volumes", []):
        if "secret" in volume and not volume["secret"].get("optional"):
            needed.add(("Secret", volume["secret"]["secretName"]))
        if "configMap" in volume and not volume["configMap"].get("optional"):
            needed.add(("ConfigMap", volume["configMap"]["name"]))
        if "persistentVolumeClaim" in volume:
            needed.add(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
    return needed


def _images(overlay: str) -> dict[str, str]:
    """The overlay's ``images:`` entries, as the image each original name becomes."""
    kustomization = KUSTOMIZE / "overlays" / overlay / "kustomization.yaml"
    entries = yaml.safe_load(kustomization.read_text(encoding="utf-8"))["images"]
    return {entry["name"]: f"{entry['newName']}:{entry['newTag']}" for entry in entries}


# --- the build as a whole --------------------------------------------------------------------


def test_overlay_objects_pass_kubernetes_and_kuberay_schemas(builds, overlay):
    manifests = builds[overlay]
    kinds = {manifest["kind"] for manifest in manifests}
    assert {"RayService", "StatefulSet", "Service", "PodDisruptionBudget"} <= kinds
    validate_manifests(manifests)


def test_every_secret_configmap_and_claim_a_pod_needs_is_in_the_build(builds, overlay):
    manifests = builds[overlay]
    present = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    present |= {("Secret", secret["name"]) for secret in USER_SECRETS}  # the README's
    for template in _pod_templates(manifests):
        missing = _required_references(template["spec"]) - present
        assert not missing, f"{template['metadata']['labels']}: {sorted(missing)}"


def test_every_object_and_pod_carries_prisms_labels(builds, overlay):
    for manifest in builds[overlay]:
        labels = manifest["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "prism", manifest["metadata"]["name"]
        assert labels.get("app.kubernetes.io/part-of") == "prism", manifest["metadata"]["name"]
    for template in _pod_templates(builds[overlay]):
        labels = template["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "prism"
        assert labels["app.kubernetes.io/instance"] == "prism"
        assert labels["app.kubernetes.io/component"]


def test_overlay_image_reaches_every_ray_container(builds, overlay):
    image = _images(overlay)["prism"]
    for container in _ray_containers(_rayservice(builds[overlay])):
        assert container["image"] == image


# --- the Serve application -------------------------------------------------------------------


def test_overlay_serves_prisms_application_built_from_its_serve_config(builds, platforms, overlay):
    platform, application = platforms[overlay]
    deployments = {deployment.name for deployment in application.deployments}
    assert deployments == {"Ingress", *map(deployment_name, platform.models)}
    assert application.ingress_deployment_name == "Ingress"
    config = serve_config(_rayservice(builds[overlay]))
    assert config["proxy_location"] == "EveryNode"
    assert config["http_options"]["host"] == "0.0.0.0"
    (app,) = config["applications"]
    assert (app["name"], app["route_prefix"]) == ("prism", "/")
    assert platform.http.host == "0.0.0.0"
    assert platform.grpc.enabled
    # What a pod loads never rests on a default: each model names its source.
    assert all(model.source for model in platform.models)


def test_serve_service_and_every_ray_pod_expose_the_http_and_grpc_ports(builds, platforms, overlay):
    platform, _ = platforms[overlay]
    rayservice = _rayservice(builds[overlay])
    ports = {port["name"]: port for port in rayservice["spec"]["serveService"]["spec"]["ports"]}
    assert ports["http"]["port"] == ports["http"]["targetPort"] == platform.http.port
    assert ports["grpc"]["port"] == ports["grpc"]["targetPort"] == platform.grpc.port
    assert ports["grpc"]["appProtocol"] == "grpc"
    # proxy_location EveryNode: the Service may pick any Ray pod, the head's included.
    for container in _ray_containers(rayservice):
        exposed = {port["containerPort"] for port in container["ports"]}
        assert {platform.http.port, platform.grpc.port} <= exposed, container["name"]


def test_dashboard_service_reaches_the_head_only(builds, overlay):
    manifests = builds[overlay]
    rayservice = _rayservice(manifests)
    service = _named(manifests, "Service", "prism-dashboard")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 8265
    selector = service["spec"]["selector"]
    head = _head(rayservice)["template"]
    assert _selects(selector, head["metadata"]["labels"])
    head_ports = {p["name"]: p["containerPort"] for p in head["spec"]["containers"][0]["ports"]}
    assert head_ports[port["targetPort"]] == 8265
    for group in _worker_groups(rayservice):
        assert not _selects(selector, group["template"]["metadata"]["labels"])


# --- Ray's resources -------------------------------------------------------------------------


def test_head_offers_ray_no_cpus_or_gpus_so_it_takes_no_model_replica(builds, overlay):
    rayservice = _rayservice(builds[overlay])
    params = _head(rayservice)["rayStartParams"]
    assert params["num-cpus"] == "0"
    assert params["num-gpus"] == "0"
    assert params["dashboard-host"] == "0.0.0.0"
    assert GPU not in _limits(_head(rayservice)["template"]["spec"])


def _replica_demand(deployment: Deployment) -> tuple[float, float]:
    """The CPUs and GPUs one replica of ``deployment`` asks Ray for, all on one node."""
    replica = deployment._replica_config
    if replica.placement_group_bundles:
        assert replica.placement_group_strategy == "STRICT_PACK"
        bundles = replica.placement_group_bundles
    else:
        options = replica.ray_actor_options
        bundles = [{"CPU": options["num_cpus"], "GPU": options.get("num_gpus", 0)}]
    return sum(b.get("CPU", 0) for b in bundles), sum(b.get("GPU", 0) for b in bundles)


def _most_replicas(deployment: Deployment) -> int:
    config = deployment._deployment_config
    scaling = config.autoscaling_config
    return scaling.max_replicas if scaling else config.num_replicas


def test_each_model_replica_fits_one_worker_pod_and_the_group_holds_its_max_replicas(
    builds, platforms, overlay
):
    _, application = platforms[overlay]
    (group,) = _worker_groups(_rayservice(builds[overlay]))
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    limits = _limits(group["template"]["spec"])
    pod_cpus, pod_gpus = _cpus(limits["cpu"]), int(limits.get(GPU, 0))
    servers = [d for d in application.deployments if d.name.startswith("LLMServer:")]
    assert servers
    for server in servers:
        cpus, gpus = _replica_demand(server)
        assert cpus <= pod_cpus and gpus <= pod_gpus, server.name
        per_pod = min(pod_cpus // cpus if cpus else 1, pod_gpus // gpus if gpus else 1)
        assert per_pod * group["maxReplicas"] >= _most_replicas(server), server.name


def test_cpu_demo_runs_the_embedded_model_on_one_cpu_worker_group(builds, platforms):
    platform, _ = platforms["cpu-demo"]
    (model,) = platform.models
    assert model.source == "smollm2-135m-instruct"
    assert (model.engine.device, model.engine.dtype) == ("cpu", "float32")
    assert model.engine.num_threads == 2
    assert (model.resources.num_cpus, model.resources.num_gpus) == (2, 0)
    (group,) = _worker_groups(_rayservice(builds["cpu-demo"]))
    limits = _limits(group["template"]["spec"])
    assert (_cpus(limits["cpu"]), limits["memory"]) == (2, "6Gi")
    assert GPU not in limits


def test_gpu_workers_ask_for_gpus_on_gpu_nodes(builds):
    (group,) = _worker_groups(_rayservice(builds["gpu"]))
    pod = group["template"]["spec"]
    assert int(_limits(pod)[GPU]) == 4
    assert pod["nodeSelector"]
    tolerations = [(t["key"], t["operator"], t["effect"]) for t in pod["tolerations"]]
    assert (GPU, "Exists", "NoSchedule") in tolerations


def test_gpu_model_is_tensor_parallel_in_bfloat16_and_autoscaled(platforms):
    platform, _ = platforms["gpu"]
    (model,) = platform.models
    assert model.engine.tensor_parallel_size == 4
    assert (model.engine.device, model.engine.dtype) == ("cuda", "bfloat16")
    assert (model.resources.num_cpus, model.resources.num_gpus) == (4, 1)
    assert model.autoscaling is not None
    assert (model.autoscaling.min_replicas, model.autoscaling.max_replicas) == (1, 4)


def test_gpu_weights_come_from_a_shared_claim_mounted_in_every_ray_pod(builds, platforms):
    manifests = builds["gpu"]
    platform, _ = platforms["gpu"]
    (model,) = platform.models
    # The head too: Serve may place an ingress replica (no CPUs) there, and it loads the
    # model's tokenizer from the source.
    for pod in _ray_pods(_rayservice(manifests)):
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        (mount,) = [path for path in mounts if model.source.startswith(path + "/")]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mounts[mount]]
        claim = _named(
            manifests, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]
        )
        # The head and several worker pods on different nodes mount it at once.
        assert "ReadWriteMany" in claim["spec"]["accessModes"]


def test_weights_job_downloads_the_model_where_the_gpu_install_reads_it(builds, platforms):
    weights = builds["gpu/weights"]
    assert not [problem for problem in map(core_errors, weights) if problem]
    (job,) = of_kind(weights, "Job")
    (claim,) = of_kind(weights, "PersistentVolumeClaim")
    assert claim == _named(builds["gpu"], "PersistentVolumeClaim", claim["metadata"]["name"])

    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    (mount,) = [m for m in container["volumeMounts"] if m["name"] in claims]
    assert claims[mount["name"]]["claimName"] == claim["metadata"]["name"]
    assert not mount.get("readOnly")
    platform, _ = platforms["gpu"]
    (model,) = platform.models
    assert f"--local-dir={model.source}" in container["args"]
    assert container["image"] == _images("gpu")["prism"]


# --- Redis -----------------------------------------------------------------------------------


def test_redis_url_names_the_bundled_redis_service_of_the_same_build(builds, platforms, overlay):
    manifests = builds[overlay]
    platform, _ = platforms[overlay]
    url = urlparse(platform.redis.url)
    assert url.scheme == "redis" and not url.password
    service = _named(manifests, "Service", url.hostname)
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    (redis,) = of_kind(manifests, "StatefulSet")
    assert redis["spec"]["serviceName"] == service["metadata"]["name"]
    template = redis["spec"]["template"]
    assert _selects(service["spec"]["selector"], template["metadata"]["labels"])
    container_ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert port["targetPort"] in container_ports
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]


def test_ray_pods_read_the_password_from_the_secret_redis_requires(builds, platforms, overlay):
    manifests = builds[overlay]
    platform, _ = platforms[overlay]
    assert platform.redis.password_env
    (redis,) = of_kind(manifests, "StatefulSet")
    redis_ref = _env(redis["spec"]["template"]["spec"]["containers"][0], "REDIS_PASSWORD")
    expected = redis_ref["valueFrom"]["secretKeyRef"]
    assert expected == REDIS_SECRET
    for container in _ray_containers(_rayservice(manifests)):
        entry = _env(container, platform.redis.password_env)
        assert entry["valueFrom"]["secretKeyRef"] == expected, container["name"]


@pytest.mark.parametrize("secret", USER_SECRETS, ids=lambda secret: secret["name"])
def test_readme_creates_the_users_secrets_before_each_apply(overlay, secret):
    readme = (KUSTOMIZE / "README.md").read_text(encoding="utf-8")
    create = (
        f"kubectl -n llm create secret generic {secret['name']} --from-literal={secret['key']}="
    )
    apply = f"kubectl apply -k k8s/overlays/{overlay}"
    assert create in readme and apply in readme
    assert readme.index(create) < readme.index(apply)


def test_the_api_key_secret_is_required_so_a_missing_one_cannot_turn_authentication_off(
    builds, platforms, overlay
):
    platform, _ = platforms[overlay]
    for container in _ray_containers(_rayservice(builds[overlay])):
        ref = _env(container, platform.http.api_key_env)["valueFrom"]["secretKeyRef"]
        assert ref == API_KEY_SECRET, container["name"]
        assert (("Secret", API_KEY_SECRET["name"])) in _required_references(
            {"containers": [container]}
        )


# --- the same install as the Helm chart ------------------------------------------------------


def _contracts(rayservice: Manifest) -> dict:
    """What the chart and the manifests must agree on, whatever their models and sizes.

    Not the volumes behind the mounts: an overlay puts the weights on a claim of its own.
    """
    spec = rayservice["spec"]
    cluster = spec["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    head_container = head["template"]["spec"]["containers"][0]
    workers = [group["template"]["spec"]["containers"][0] for group in cluster["workerGroupSpecs"]]
    config = serve_config(rayservice)
    (app,) = config["applications"]
    args = app["args"]
    return {
        "rayservice fields": sorted(spec),
        "gcs fault tolerance": cluster.get("gcsFaultToleranceOptions"),
        "autoscaler options": cluster.get("autoscalerOptions"),
        "token mounts": [pod.get("automountServiceAccountToken") for pod in _ray_pods(rayservice)],
        "container security": [c["securityContext"] for c in [head_container, *workers]],
        "upgradeStrategy": spec["upgradeStrategy"],
        "serveService ports": spec["serveService"]["spec"]["ports"],
        "rayVersion": cluster["rayVersion"],
        "autoscaling": cluster["enableInTreeAutoscaling"],
        "head rayStartParams": head["rayStartParams"],
        "head ports": head_container["ports"],
        "head probes": [head_container["readinessProbe"], head_container["livenessProbe"]],
        "worker rayStartParams": [g["rayStartParams"] for g in cluster["workerGroupSpecs"]],
        "worker ports": [c["ports"] for c in workers],
        "worker probes": [[c["readinessProbe"], c["livenessProbe"]] for c in workers],
        "head mounts": head_container["volumeMounts"],
        "worker mounts": [c["volumeMounts"] for c in workers],
        "pod security": [pod.get("securityContext") for pod in _ray_pods(rayservice)],
        "serve config": {key: value for key, value in config.items() if key != "applications"},
        "application": {key: value for key, value in app.items() if key != "args"},
        "http": {
            key: args["http"][key] for key in ("host", "port", "api_key_env", "ingress_resources")
        },
        "grpc": args["grpc"],
        "redis": args["redis"],
    }


def test_rayservice_keeps_the_contracts_of_the_helm_charts_rayservice(builds, overlay):
    values = CHART_VALUES[overlay]
    if values is not None and not values.exists():
        pytest.skip(f"the chart has no {values.name}")
    (chart,) = of_kind(helm_template(values), "RayService")
    ours = _contracts(_rayservice(builds[overlay]))
    theirs = _contracts(chart)
    for key in theirs:
        assert ours[key] == theirs[key], key


@pytest.mark.parametrize("kind", ["NetworkPolicy", "PodDisruptionBudget"])
def test_overlay_guards_its_pods_as_the_helm_chart_does(builds, overlay, kind):
    values = CHART_VALUES[overlay]
    chart = {m["metadata"]["name"]: m["spec"] for m in of_kind(helm_template(values), kind)}
    ours = {m["metadata"]["name"]: m["spec"] for m in of_kind(builds[overlay], kind)}
    # The chart's download Job is the overlay's weights/ Job, applied apart.
    chart.pop("prism-model-download", None)
    assert ours == chart
