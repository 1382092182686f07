"""The platform config: models, engine settings, HTTP, Redis, routing and autoscaling.

A deployment profile (``deployments/*.yaml``) is one :class:`PlatformConfig`. Errors name the
file and the field, e.g. ``deployments/x.yaml: models.0.engine.block_size: ...``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

DEPLOYMENTS_DIR = Path(__file__).resolve().parent / "deployments"
DEFAULT_PROFILE = DEPLOYMENTS_DIR / "local-cpu.yaml"


def _positive(size: ByteSize) -> ByteSize:
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return size


KVCacheBytes = Annotated[ByteSize, AfterValidator(_positive)]
"""A size in bytes: a number, or text with a unit (``512MiB``, ``1GiB``; ``2GB`` is 2·10⁹)."""


class ConfigError(ValueError):
    """A platform config that cannot be read or does not validate."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class EngineSettings(_Section):
    """The engine of each replica: the one place its defaults are declared.

    The serving and CLI layers build the engine's ``EngineConfig`` from these fields.
    """

    block_size: int = Field(default=16, ge=1, le=1024)
    max_num_seqs: int = Field(default=64, ge=1)
    max_num_batched_tokens: int = Field(default=2048, ge=1)
    max_model_len: int | None = Field(default=None, ge=2)
    enable_prefix_caching: bool = True
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    weight_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    quantization: Literal["none", "int8", "int4", "gguf"] = "none"
    """Weight-only quantization of a full-precision checkpoint at load (round to nearest):
    int8 keeps one scale per row, int4 a scale and offset per group of columns. gguf serves
    a GGUF model's own quantized blocks. A checkpoint quantized by GPTQ, AWQ or
    compressed-tensors is served as it is stored, under none. See docs/quantization.md."""
    quantization_group_size: int | None = Field(default=None, ge=8)
    """Columns sharing one scale (int4: a multiple of 32); None: the mode's default."""
    kv_cache_bytes: KVCacheBytes = ByteSize(1 << 30)
    gpu_memory_utilization: float = Field(default=0.85, gt=0.0, le=1.0)
    num_kv_blocks: int | None = Field(default=None, ge=1)
    num_threads: int | None = Field(default=None, ge=1)
    seed: int = 0
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    """Ranks (usually GPUs of one node) that split each layer; see docs/tensor-parallel.md."""
    step_timeout_s: float = Field(default=60.0, gt=0.0)
    """A step running longer than this (a hung rank or device) marks the engine dead: its
    requests end with a retryable error and the health check fails, so Serve replaces the
    replica. Keep it above the slowest real step."""
    fault_injection: bool = False
    """Lets ``LLMServer.inject_step_fault`` fail the next engine step, for ``prism bench
    chaos``; never on in production."""
    warmup: bool = True
    """Each replica runs one synthetic request through its engine before it reports ready,
    so the first real request does not pay the first forward pass's one-time costs."""


class ReplicaResources(_Section):
    """What Ray reserves for each rank of a replica (the whole replica when it has one rank).

    With ``tensor_parallel_size`` N a replica is one placement group of N such bundles, all
    on one node.
    """

    num_cpus: float = Field(default=1.0, ge=0.0)
    num_gpus: float = Field(default=0.0, ge=0.0)


class AutoscalingSettings(_Section):
    """Replica bounds, the load each replica should stay under, and how fast to react.

    See docs/autoscaling.md: any limit exceeded adds replicas; replicas go only when every
    signal would stay under ``scale_in_ratio`` of its limit without them.
    """

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(default=32.0, gt=0.0)
    """Running plus waiting requests per replica."""
    max_waiting_per_replica: float = Field(default=4.0, gt=0.0)
    """Requests queued behind a full batch, per replica."""
    max_pending_prefill_tokens: float = Field(default=8192.0, gt=0.0)
    """Uncached prompt tokens waiting to be prefilled, per replica."""
    ttft_p90_objective_s: float = Field(default=2.0, gt=0.0)
    """The slowest replica's recent time-to-first-token p90."""
    kv_usage_high: float = Field(default=0.9, gt=0.0, le=1.0)
    """Mean share of KV cache blocks held by requests."""
    scale_in_ratio: float = Field(default=0.5, gt=0.0, lt=1.0)
    """Scale in only while every signal would stay under this share of its limit."""
    look_back_s: float = Field(default=10.0, gt=0.0)
    """Serve averages each replica's reports over this window."""
    metrics_push_interval_s: float = Field(default=2.0, gt=0.0)
    """How often each replica sends its reports to Serve's controller."""
    upscale_delay_s: float = Field(default=10.0, ge=0.0)
    """How long more replicas must be wanted before they are added."""
    downscale_delay_s: float = Field(default=120.0, ge=0.0)
    """The quiet period: how long fewer replicas must be wanted before any stops."""

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        if self.look_back_s <= self.metrics_push_interval_s:
            raise ValueError("look_back_s must exceed metrics_push_interval_s")
        return self

    def objectives(self) -> dict[str, float]:
        """The policy's limits, as ``prism.autoscaling.policy.Objectives`` takes them."""
        return self.model_dump(
            include={
                "target_ongoing_requests",
                "max_waiting_per_replica",
                "max_pending_prefill_tokens",
                "ttft_p90_objective_s",
                "kv_usage_high",
                "scale_in_ratio",
            }
        )


class ModelSettings(_Section):
    """One served model: its name in the API, where its weights come from, its replicas."""

    id: str = Field(min_length=1, pattern=r"^[\w.\-/:]+$")
    source: str | None = None
    engine: EngineSettings = EngineSettings()
    replicas: int = Field(default=1, ge=1)
    autoscaling: AutoscalingSettings | None = None
    resources: ReplicaResources = ReplicaResources()
    max_queued_requests: int = Field(default=256, ge=0)
    """Requests a replica lets wait behind a full batch; more are refused (HTTP 429)."""

    @model_validator(mode="after")
    def _rank_resources(self) -> ModelSettings:
        if self.engine.tensor_parallel_size == 1:
            return self
        gpus, cpus = self.resources.num_gpus, self.resources.num_cpus
        if gpus != int(gpus):
            raise ValueError(
                f"with tensor_parallel_size > 1 each rank needs whole GPUs (num_gpus is {gpus})"
            )
        if gpus == 0 and cpus == 0:
            raise ValueError("with tensor_parallel_size > 1 each rank must reserve a CPU or GPU")
        return self


WILDCARD_HOSTS = ("0.0.0.0", "::")


class HTTPSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_key_env: str = "PRISM_API_KEY"
    api_key_file: Path | None = None
    api_keys_file: Path | None = None
    """A YAML or JSON list of tenants, each with its own key (docs/configuration.md); the
    key of ``api_key_file`` or ``api_key_env``, if any, is tenant ``default``."""
    max_request_bytes: ByteSize = Field(default=ByteSize(4 << 20), gt=0)
    """The largest request body (HTTP) or request message (gRPC) accepted: more is refused
    (HTTP 413, gRPC RESOURCE_EXHAUSTED)."""
    max_concurrent_requests_per_key: int | None = Field(default=None, ge=1)
    """Requests one API key may have in flight at each ingress replica (streams count until
    they end); more get HTTP 429 / RESOURCE_EXHAUSTED. None: no limit."""
    ingress_replicas: int = Field(default=1, ge=1)
    """Ingress replicas; each runs its own router over the shared Redis index."""
    ingress_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each ingress replica asks for, to place it: the Helm chart gives
    worker nodes one the head lacks, so a head pod's restart never takes an ingress down."""
    sse_ping_interval_s: float = Field(default=15.0, ge=0.0)
    """A streamed response sends a ``: ping`` comment this often, so proxies and load
    balancers keep it open while tokens are slow to come (0: no pings)."""


class GRPCSettings(_Section):
    """The gRPC API (``prism.v1.Generation``, health, reflection) on Serve's gRPC proxy."""

    enabled: bool = True
    port: int = Field(default=9000, ge=0, le=65535)
    allow_unauthenticated: bool = False
    """Serve the gRPC API without an API key. Serve's gRPC proxy listens on every interface
    (not ``http.host``), so without a key ``prism serve`` leaves it off unless this is set."""


def grpc_exposable(grpc: GRPCSettings, api_key_set: bool) -> bool:
    """Whether ``prism serve`` may start the gRPC API: with a key, or when told to go keyless."""
    return api_key_set or grpc.allow_unauthenticated


def local_host(bind_host: str) -> str:
    """The address a client on this machine dials for a server bound to ``bind_host``."""
    return "127.0.0.1" if bind_host in WILDCARD_HOSTS else bind_host


def openai_base_url(http: HTTPSettings) -> str:
    """The OpenAI API's base URL as a client on this machine reaches it."""
    return f"http://{local_host(http.host)}:{http.port}/v1"


def grpc_target(http: HTTPSettings, grpc: GRPCSettings) -> str:
    """The gRPC API's ``host:port`` as a client on this machine reaches it."""
    return f"{local_host(http.host)}:{grpc.port}"


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in it (``redis://:<password>@host:port/db``)."""
    parts = urlsplit(url)
    netloc = f":{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def redact_url(url: str) -> str:
    """``url`` with any password in it replaced by ``***``, fit to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}"))


class RedisSettings(_Section):
    """The prefix index's Redis; ``url`` None: ``prism serve`` starts an embedded server."""

    url: str | None = None
    password_env: str | None = Field(default=None, min_length=1)
    """An environment variable holding the password (e.g. from a Kubernetes Secret), so the
    URL carries none; read by each process when it connects."""
    key_prefix: str = Field(default="prism", min_length=1, pattern=r"^[\w.\-:]+$")
    liveness_ttl_s: float = Field(default=5.0, gt=0.0)
    """A replica whose heartbeat is older than this stops counting; its entries expire."""
    publish_interval_s: float = Field(default=0.05, gt=0.0)
    """How often a replica sends its batched KV events."""
    timeout_s: float = Field(default=0.1, gt=0.0)
    """A router query slower than this routes by load alone (and is counted)."""

    def password(self) -> str | None:
        """The password from ``password_env`` (None when unset: the URL's own, if any)."""
        return os.environ.get(self.password_env) if self.password_env else None


RoutingPolicy = Literal["prefix", "pow2", "round_robin", "session"]
ROUTING_POLICIES: tuple[str, ...] = RoutingPolicy.__args__


class RouterSettings(_Section):
    """How an ingress picks a model replica for each request.

    ``prefix``: fewest uncached prompt tokens plus load (the default); ``pow2``: the shorter
    queue of two random replicas; ``round_robin``; ``session``: a consistent hash of the
    client's ``x-session-id`` header.
    """

    policy: RoutingPolicy = "prefix"
    load_cost_tokens: float = Field(default=32.0, ge=0.0)
    """Prompt tokens that one running or waiting request on a replica is worth in its cost."""
    imbalance_threshold: int = Field(default=16, ge=1)
    """A cache hit may not send a request to a replica with this many more requests in flight
    than the least loaded one."""
    kv_usage_threshold: float = Field(default=0.95, gt=0.0, le=1.0)
    """Replicas whose KV cache is fuller than this are avoided while others are not."""
    predicted_ttl_s: float = Field(default=10.0, gt=0.0)
    """How long a routed request's blocks count as cached on its replica before the engine
    reports them."""
    stats_period_s: float = Field(default=1.0, gt=0.0)
    """How often Serve polls each replica's load for the router."""


class RaySettings(_Section):
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8265, ge=0, le=65535)
    metrics_export_port: int = Field(default=8080, ge=0, le=65535)


class PlatformConfig(_Section):
    """Everything one ``prism serve`` deploys."""

    models: list[ModelSettings] = Field(min_length=1)
    http: HTTPSettings = HTTPSettings()
    grpc: GRPCSettings = GRPCSettings()
    redis: RedisSettings = RedisSettings()
    router: RouterSettings = RouterSettings()
    ray: RaySettings = RaySettings()

    @model_validator(mode="after")
    def _unique_model_ids(self) -> PlatformConfig:
        ids = [model.id for model in self.models]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"model ids must be unique: {', '.join(duplicates)}")
        return self


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def parse_config(raw: object, origin: str) -> PlatformConfig:
    """Validate a platform config read from ``origin``; :class:`ConfigError` names the field."""
    try:
        return PlatformConfig.model_validate(raw if raw is not None else {})
    except ValidationError as error:
        raise ConfigError(f"{origin}: {_describe(error)}") from error


def load_config(path: Path | str) -> PlatformConfig:
    """Read and validate a deployment profile; :class:`ConfigError` names file and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return parse_config(raw, str(path))
