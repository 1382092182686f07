"""API keys and the tenants they name: the keys file, and the check HTTP and gRPC share."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from prism.config import ConfigError
from prism.errors import Unauthorized

DEFAULT_TENANT = "default"
"""The tenant of the single key (``http.api_key_file`` / ``http.api_key_env``)."""


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who a request's API key belongs to; ``max_concurrent_requests`` None: no limit."""

    name: str
    max_concurrent_requests: int | None = None


class TenantKey(BaseModel):
    """One entry of the keys file."""

    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(min_length=1, max_length=64, pattern=r"^[\w.@:\-]+$")
    key: str = Field(min_length=1)
    max_concurrent_requests: int | None = Field(default=None, ge=1)
    """Overrides ``http.max_concurrent_requests_per_key`` for this tenant."""


_KEYS_FILE = TypeAdapter(list[TenantKey])


def read_keys_file(path: Path) -> list[TenantKey]:
    """The tenants of a keys file (YAML, or JSON, which YAML reads too)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return _KEYS_FILE.validate_python(raw)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML or JSON") from error  # the text holds keys
    except ValidationError as error:
        where = "; ".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in error.errors())
        raise ConfigError(f"{path}: {where}") from None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", errors="surrogateescape")).digest()


class APIKeys:
    """The keys the API accepts and their tenants; none: every request passes, tenantless.

    Only SHA-256 digests of the keys are kept. A presented key is compared with every
    known key in constant time (digests have one length, and no match stops the loop).
    """

    def __init__(self, tenants: list[tuple[str, Tenant]]) -> None:
        names = [tenant.name for _, tenant in tenants]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ConfigError(
                f"API keys: tenants named more than once: {', '.join(twice)} (the single "
                f"key, if set, is tenant {DEFAULT_TENANT!r})"
            )
        self._tenants = [(_digest(key), tenant) for key, tenant in tenants]
        if len({digest for digest, _ in self._tenants}) != len(self._tenants):
            raise ConfigError("API keys: two tenants have the same key")

    @classmethod
    def of(
        cls, single_key: str | None, keys_file: Path | None, default_limit: int | None
    ) -> APIKeys:
        """The single key as tenant ``default``, plus the tenants of ``keys_file``."""
        entries = read_keys_file(keys_file) if keys_file is not None else []
        if single_key is not None:
            entries.insert(0, TenantKey(tenant=DEFAULT_TENANT, key=single_key))
        return cls(
            [
                (entry.key, Tenant(entry.tenant, entry.max_concurrent_requests or default_limit))
                for entry in entries
            ]
        )

    def __len__(self) -> int:
        """The number of keys (0: none is required)."""
        return len(self._tenants)

    def authenticate(self, authorization: str | None) -> Tenant | None:
        """The tenant of ``Bearer <key>`` (None when no key is required).

        Raises :class:`Unauthorized` for anything else: no header, another scheme, an
        unknown key, any text (non-ASCII included) that is not a key.
        """
        if not self._tenants:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        given = _digest(token.strip())
        found = None
        for digest, tenant in self._tenants:
            if hmac.compare_digest(given, digest):
                found = tenant
        if scheme.lower() != "bearer" or found is None:
            raise Unauthorized("missing or invalid API key")
        return found
