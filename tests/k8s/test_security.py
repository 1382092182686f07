"""Pod Security: every pod the chart or the kustomize overlays make meets the "restricted"
profile, has a read-only root filesystem with writable emptyDirs where Ray and Prism write,
sets resources on every container, and gets each Secret only where it is used; checkov's
Kubernetes checks pass on every render (docs/kubernetes.md, "Security").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.kube import (
    CHART,
    KUSTOMIZE,
    ROOT,
    Manifest,
    helm_template,
    kustomize_build,
    of_kind,
)

CHART_VALUES = {
    "chart-default": None,
    "chart-cpu-demo": CHART / "ci" / "cpu-demo-values.yaml",
    "chart-gpu-tp4": CHART / "ci" / "gpu-tp4-values.yaml",
    "chart-external-redis": CHART / "ci" / "external-redis-values.yaml",
}
OVERLAYS = {
    "kustomize-cpu-demo": KUSTOMIZE / "overlays" / "cpu-demo",
    "kustomize-gpu": KUSTOMIZE / "overlays" / "gpu",
    "kustomize-gpu-weights": KUSTOMIZE / "overlays" / "gpu" / "weights",
}
RENDERS = [*CHART_VALUES, *OVERLAYS]

_renders: dict[str, list[Manifest]] = {}


def render(name: str) -> list[Manifest]:
    """One of the rendered sets: the chart with a shipped values file, or an overlay."""
    if name not in _renders:
        if name in CHART_VALUES:
            _renders[name] = helm_template(CHART_VALUES[name])
        else:
            _renders[name] = kustomize_build(OVERLAYS[name])
    return _renders[name]


# --- the pods of a render --------------------------------------------------------------------


def ray_pods(rayservice: Manifest) -> Iterator[tuple[str, dict]]:
    """The head's and each worker group's pod spec. The head's includes the autoscaler
    container, which KubeRay adds from autoscalerOptions when autoscaling is on."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    name = rayservice["metadata"]["name"]
    head = json.loads(json.dumps(cluster["headGroupSpec"]["template"]["spec"]))
    if cluster.get("enableInTreeAutoscaling"):
        options = cluster.get("autoscalerOptions", {})
        autoscaler = {
            "name": "autoscaler",
            "image": head["containers"][0]["image"],
            "securityContext": options.get("securityContext"),
            "resources": options.get("resources"),
            "volumeMounts": options.get("volumeMounts", []),
        }
        head["containers"].append(autoscaler)
    yield f"{name}/head", head
    for group in cluster["workerGroupSpecs"]:
        yield f"{name}/{group['groupName']}", group["template"]["spec"]


def pods(manifests: list[Manifest]) -> Iterator[tuple[str, dict]]:
    """(where, pod spec) of every pod the objects make, the Ray pods included."""
    for manifest in manifests:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind == "RayService":
            yield from ray_pods(manifest)
        elif kind in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
            yield f"{kind}/{name}", manifest["spec"]["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


# --- Pod Security "restricted" ---------------------------------------------------------------

RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
"""The volume types the restricted profile allows."""


def restricted_violations(where: str, pod: dict) -> list[str]:
    """What the Pod Security "restricted" profile (and this project's stricter rules: a
    read-only root filesystem, requests and limits) finds wrong with a pod spec."""
    problems = []
    pod_context = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{where}: {flag}")
    for volume in pod.get("volumes", []):
        if not set(volume) - {"name"} <= RESTRICTED_VOLUMES:
            problems.append(f"{where}: volume {volume['name']} is {sorted(set(volume) - {'name'})}")
    for container in containers(pod):
        at = f"{where}/{container['name']}"
        context = container.get("securityContext") or {}

        def setting(key: str, context: dict = context) -> object:
            return context[key] if key in context else pod_context.get(key)

        if context.get("privileged"):
            problems.append(f"{at}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{at}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{at}: adds capabilities {capabilities['add']}")
        if setting("runAsNonRoot") is not True:
            problems.append(f"{at}: runAsNonRoot is not true")
        if setting("runAsUser") == 0:
            problems.append(f"{at}: runs as uid 0")
        seccomp = (setting("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{at}: seccompProfile {seccomp}")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: the root filesystem is writable")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{at}: hostPort")
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(kind) or {})
            if missing:
                problems.append(f"{at}: no {kind} for {sorted(missing)}")
    return problems


@pytest.mark.parametrize("name", RENDERS)
def test_every_pod_meets_the_restricted_pod_security_profile(name: str) -> None:
    found = list(pods(render(name)))
    assert found
    problems = [problem for where, pod in found for problem in restricted_violations(where, pod)]
    assert not problems, "\n".join(problems)


def test_the_restricted_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        """
securityContext:
  allowPrivilegeEscalation: true
  readOnlyRootFilesystem: false
  runAsNonRoot: false
  runAsUser: 0
  capabilities: null
  seccompProfile: null
podSecurityContext: {runAsNonRoot: null, runAsUser: 0, seccompProfile: null}
head:
  sidecars: [{name: root, image: "busybox:1.37", securityContext: {privileged: true}}]
  extraVolumes: [{name: host, hostPath: {path: /var/run}}]
""",
        encoding="utf-8",
    )
    (head,) = [pod for where, pod in pods(helm_template(values)) if where.endswith("/head")]
    problems = "\n".join(restricted_violations("head", head))
    for expected in (
        "head/ray-head: allowPrivilegeEscalation is not false",
        "head/ray-head: the root filesystem is writable",
        "head/ray-head: runAsNonRoot is not true",
        "head/ray-head: runs as uid 0",
        "head/ray-head: seccompProfile None",
        "head/ray-head: capabilities do not drop ALL",
        "head/root: privileged",
        "head/root: no requests for ['cpu', 'memory']",
        "head: volume host is ['hostPath']",
    ):
        assert expected in problems


def test_pod_security_admission_labels_are_documented() -> None:
    docs = (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    assert "pod-security.kubernetes.io/enforce=restricted" in docs
    readme = (KUSTOMIZE / "README.md").read_text(encoding="utf-8")
    assert "pod-security.kubernetes.io/enforce=restricted" in readme


# --- a read-only root filesystem -------------------------------------------------------------


def _dockerfile_env(name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert match, f"the Dockerfile sets no {name}"
    return match.group(1)


@pytest.mark.parametrize("name", ["chart-default", "chart-gpu-tp4", "kustomize-gpu"])
def test_ray_writes_only_to_writable_volumes(name: str) -> None:
    writable = {
        "/tmp",  # Ray's session directory /tmp/ray, temporary files
        f"{_dockerfile_env('PRISM_CACHE_DIR')}/kernels",  # Prism's CPU kernels, built on first use
        "/home/ray/.cache/huggingface",
    }
    (rayservice,) = of_kind(render(name), "RayService")
    for where, pod in ray_pods(rayservice):
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        ray = pod["containers"][0]
        mounts = {
            mount["mountPath"]: volumes[mount["name"]]
            for mount in ray["volumeMounts"]
            if not mount.get("readOnly")
        }
        assert writable <= set(mounts), where
        assert all("emptyDir" in mounts[path] for path in writable), where
        assert {m["name"]: m for m in ray["volumeMounts"]}["models"]["readOnly"] is True
    options = rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"]
    assert {"name": "tmp", "mountPath": "/tmp"} in options["volumeMounts"]


# --- secrets only where they are used --------------------------------------------------------


def secrets_of(container: dict) -> set[str]:
    names = {
        entry["valueFrom"]["secretKeyRef"]["name"]
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    names |= {
        entry["secretRef"]["name"] for entry in container.get("envFrom", []) if "secretRef" in entry
    }
    return names


@pytest.mark.parametrize("name", ["chart-gpu-tp4", "kustomize-gpu", "kustomize-gpu-weights"])
def test_each_secret_reaches_only_the_containers_that_use_it(name: str) -> None:
    hf_token = "hf-token" if name.startswith("chart") else "prism-hf-token"
    expected = {
        # The API key and the index's Redis password: Prism, in every Ray container.
        "ray-head": {"prism-redis", "prism-api-key"},
        "ray-worker": {"prism-redis", "prism-api-key"},
        # The Hugging Face token: only the containers that download.
        "download": {hf_token},
        "download-models": {hf_token},
        "wait-for-models": set(),
        "autoscaler": set(),
        "redis": {"prism-redis"},
    }
    seen = set()
    for where, pod in pods(render(name)):
        assert not any("secret" in volume for volume in pod.get("volumes", [])), where
        for container in containers(pod):
            assert secrets_of(container) == expected[container["name"]], (where, container["name"])
            seen.add(container["name"])
    assert seen


# --- checkov ---------------------------------------------------------------------------------

CHECKOV = ROOT / ".venv" / "checkov" / "bin" / "checkov"
CHECKOV_TIMEOUT_S = 600
ENFORCED = {
    "CKV_K8S_8": "liveness probe",
    "CKV_K8S_9": "readiness probe",
    "CKV_K8S_10": "CPU requests",
    "CKV_K8S_11": "CPU limits",
    "CKV_K8S_12": "memory requests",
    "CKV_K8S_13": "memory limits",
    "CKV_K8S_14": "a fixed image tag",
    "CKV_K8S_16": "no privileged container",
    "CKV_K8S_17": "no host PID",
    "CKV_K8S_18": "no host IPC",
    "CKV_K8S_19": "no host network",
    "CKV_K8S_20": "allowPrivilegeEscalation false",
    "CKV_K8S_22": "read-only root filesystem",
    "CKV_K8S_23": "no root containers",
    "CKV_K8S_25": "no added capabilities",
    "CKV_K8S_28": "NET_RAW dropped",
    "CKV_K8S_29": "a pod security context",
    "CKV_K8S_30": "a container security context",
    "CKV_K8S_31": "the RuntimeDefault seccomp profile",
    "CKV_K8S_37": "capabilities dropped",
    "CKV_K8S_38": "no ServiceAccount token where none is used",
    "CKV_K8S_39": "no SYS_ADMIN",
}
"""Checks that must pass on every render (docs/kubernetes.md, "Security"); all the others
that checkov has for Kubernetes must pass too, except SKIPPED."""
SKIPPED = {
    "CKV_K8S_43": "the chart pins tags, not digests: digests are the user's to choose",
    "CKV_K8S_15": "IfNotPresent with immutable tags: Always slows every start of a multi-GB image",
    "CKV_K8S_35": "Prism reads the Redis password and API key from environment variables, "
    "KubeRay passes the GCS's Redis password the same way, and hf reads HF_TOKEN",
    "CKV_K8S_40": "Ray's images run as uid 1000, owner of their home (Redis: 999); restricted "
    "asks for non-root, not a high uid",
}
"""Checks that cannot apply, and why."""
EXCEPTIONS = {
    # KubeRay's autoscaler, a sidecar of the head, talks to the Kubernetes API.
    ("CKV_K8S_38", "head"),
}
"""(check, Ray pod group) pairs that may fail."""


def checkov_documents(name: str) -> list[Manifest]:
    """A render as checkov reads it: its objects, and each Ray pod template as a Pod
    (checkov does not read a RayService)."""
    manifests = render(name)
    documents = list(manifests)
    for rayservice in of_kind(manifests, "RayService"):
        cluster = rayservice["spec"]["rayClusterConfig"]
        groups = [("head", cluster["headGroupSpec"])]
        groups += [(group["groupName"], group) for group in cluster["workerGroupSpecs"]]
        for group, spec in groups:
            template = spec["template"]
            metadata = {
                "name": f"{rayservice['metadata']['name']}-{group}",
                "namespace": rayservice["metadata"].get("namespace", "llm"),
                "labels": template["metadata"]["labels"],
                "annotations": template["metadata"].get("annotations", {}),
            }
            documents.append(
                {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
            )
    return documents


@pytest.fixture(scope="module")
def checkov(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[dict]]]:
    """checkov's results for every render, from one run over all of them: by render, its
    passed and failed checks."""
    assert CHECKOV.exists(), f"no checkov at {CHECKOV}: run `make setup`"
    folder = tmp_path_factory.mktemp("checkov")
    for name in RENDERS:
        text = yaml.safe_dump_all(checkov_documents(name), sort_keys=False)
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    command = [
        str(CHECKOV),
        "--directory",
        str(folder),
        "--framework",
        "kubernetes",
        "--skip-check",
        ",".join(sorted(SKIPPED)),
        "--output",
        "json",
        "--soft-fail",
        "--skip-download",
        "--compact",
    ]
    environment = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": ""}
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=CHECKOV_TIMEOUT_S,
        check=False,
        env=environment,
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    results: dict[str, dict[str, list[dict]]] = {
        name: {"passed": [], "failed": []} for name in RENDERS
    }
    for part in reports:
        assert not part["results"].get("parsing_errors"), part["results"]["parsing_errors"]
        for outcome in ("passed", "failed"):
            for check in part["results"][f"{outcome}_checks"]:
                name = Path(check["file_path"]).stem
                results[name][outcome].append(check)
    return results


def _group_of(check: dict) -> str:
    """The Ray pod group a check ran on ('' for other objects): Pod.<namespace>.prism-<group>."""
    kind, _, rest = check["resource"].partition(".")
    return rest.rpartition(".")[2].removeprefix("prism-") if kind == "Pod" else ""


@pytest.mark.parametrize("name", RENDERS)
def test_checkov_finds_nothing_in_any_render(checkov, name: str) -> None:
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in checkov[name]["failed"]
        if (check["check_id"], _group_of(check)) not in EXCEPTIONS
    ]
    assert not failed, "\n".join(failed)
    assert checkov[name]["passed"], f"checkov checked nothing in {name}"


WORKLOADS = {"Pod", "StatefulSet", "Deployment", "Job"}
PROBE_CHECKS = {"CKV_K8S_8", "CKV_K8S_9"}
"""checkov does not ask a Job for probes."""


@pytest.mark.parametrize("name", RENDERS)
def test_checkov_ran_every_enforced_check_on_every_workload(checkov, name: str) -> None:
    ran: dict[str, set[str]] = {}
    for outcome in ("passed", "failed"):
        for check in checkov[name][outcome]:
            ran.setdefault(check["resource"], set()).add(check["check_id"])
    # <kind>.<namespace>.<name>; the graph's own Pods (for NetworkPolicy checks) say more.
    workloads = [r for r in ran if r.split(".")[0] in WORKLOADS and r.count(".") == 2]
    for rayservice in of_kind(render(name), "RayService"):
        head = f"Pod.llm.{rayservice['metadata']['name']}-head"
        assert head in workloads, "checkov did not check the Ray pods"
    assert workloads
    for resource in workloads:
        expected = set(ENFORCED) - (PROBE_CHECKS if resource.startswith("Job.") else set())
        missing = expected - ran[resource]
        assert not missing, (resource, sorted(missing))


def test_no_check_is_both_enforced_and_skipped() -> None:
    assert not set(ENFORCED) & set(SKIPPED)
    docs = (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    for check in [*ENFORCED, *SKIPPED]:
        assert check in docs, f"docs/kubernetes.md does not list {check}"
