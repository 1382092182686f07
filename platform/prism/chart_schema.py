"""The JSON Schema of the Helm chart's ``platform:`` values, derived from :mod:`prism.config`.

The chart renders ``platform:`` into the Serve config's application args, so it takes the
same platform config ``prism serve`` reads, less what the chart itself decides (ports,
host, the Redis URL and password, the API key's source, Ray's own ports). Each model must
name its weights' ``source``: a cluster has no implied default.

``python -m prism.chart_schema`` writes these definitions into
``helm/prism/values.schema.json`` (its ``$defs``); the chart tests check they are current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from prism.config import PlatformConfig

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "prism"
VALUES_SCHEMA = CHART_DIR / "values.schema.json"
PLATFORM_DEF = "PlatformValues"

CHART_OWNED: dict[str, tuple[str, ...]] = {
    "PlatformConfig": ("ray",),
    "HTTPSettings": ("host", "port", "api_key_env", "api_key_file", "api_keys_file"),
    "GRPCSettings": ("port", "allow_unauthenticated"),
    "RedisSettings": ("url", "password_env"),
}
"""Fields the chart sets itself, by the config section that holds them."""


def _drop_fields(schema: dict, names: tuple[str, ...]) -> None:
    for name in names:
        schema["properties"].pop(name)
    if "required" in schema:
        schema["required"] = [field for field in schema["required"] if field not in names]


def _whole_gpus_per_rank() -> dict:
    """With more than one rank, each rank takes whole GPUs (as ``ModelSettings`` checks)."""
    return {
        "if": {
            "properties": {
                "engine": {
                    "properties": {"tensor_parallel_size": {"minimum": 2}},
                    "required": ["tensor_parallel_size"],
                }
            },
            "required": ["engine"],
        },
        "then": {"properties": {"resources": {"properties": {"num_gpus": {"multipleOf": 1}}}}},
    }


def platform_defs() -> dict[str, dict]:
    """``$defs`` for the chart: ``PlatformValues`` and the config sections it refers to."""
    schema = PlatformConfig.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, dict] = schema.pop("$defs")
    defs[PLATFORM_DEF] = schema
    for section, names in CHART_OWNED.items():
        _drop_fields(defs[PLATFORM_DEF] if section == "PlatformConfig" else defs[section], names)
    defs.pop("RaySettings")
    for section in defs[PLATFORM_DEF]["properties"].values():
        section.pop("default", None)  # they would list the fields the chart owns
    model = defs["ModelSettings"]
    model["properties"]["source"] = {
        "type": "string",
        "minLength": 1,
        "description": "The weights: the embedded default's id, an HF folder or a .gguf file "
        "inside the pods (e.g. on the model cache volume).",
    }
    model["required"] = ["id", "source"]
    model["allOf"] = [_whole_gpus_per_rank()]
    return defs


def write_values_schema(path: Path = VALUES_SCHEMA) -> None:
    """Replace the platform definitions in the chart's ``values.schema.json``."""
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["$defs"] = platform_defs()
    path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_values_schema(Path(sys.argv[1]) if len(sys.argv) > 1 else VALUES_SCHEMA)
