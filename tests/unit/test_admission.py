"""Admission at the ingress through the API's ASGI middleware (no Ray): the API key, the size
of request bodies, and each tenant's limit on requests in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from prism.serving.admission import Admission, TooManyRequests
from prism.serving.auth import APIKeys, Tenant
from prism.serving.http_middleware import APIMiddleware

LIMIT = 1000
SOLO = Tenant("solo", max_concurrent_requests=1)


def api_keys() -> APIKeys:
    return APIKeys([("key-solo", SOLO), ("key-free", Tenant("free"))])


def keyed(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


class App:
    """A FastAPI app behind the middleware whose routes wait until they are let go."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.app.add_middleware(APIMiddleware)
        self.admission = Admission(api_keys(), LIMIT)
        self.app.state.admission = self.admission
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.bodies: list[bytes] = []

        @self.app.post("/echo")
        async def echo(request: Request) -> JSONResponse:
            self.bodies.append(await request.body())
            return JSONResponse({"tenant": request.state.tenant.name})

        @self.app.post("/wait")
        async def wait() -> JSONResponse:
            self.entered.set()
            await self.release.wait()
            return JSONResponse({})

        @self.app.post("/stream")
        async def stream() -> StreamingResponse:
            async def parts() -> AsyncIterator[bytes]:
                self.entered.set()
                yield b"first\n"
                await self.release.wait()
                yield b"last\n"

            return StreamingResponse(parts())

        @self.app.get("/health")
        async def health() -> JSONResponse:
            return JSONResponse({"status": "ok"})

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://test")


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_hold_counts_each_tenant_against_its_own_limit() -> None:
    admission = Admission(api_keys(), LIMIT)
    with admission.hold(SOLO):
        with pytest.raises(TooManyRequests), admission.hold(SOLO):
            pass
        with admission.hold(Tenant("free")), admission.hold(Tenant("free")), admission.hold(None):
            pass
    with admission.hold(SOLO):  # released: free again
        pass


def test_a_key_names_the_tenant_and_a_wrong_one_is_a_401() -> None:
    async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with App().client() as client:
            return (
                await client.post("/echo", content=b"{}", headers=keyed("key-free")),
                await client.post("/echo", content=b"{}", headers=keyed("key-nope")),
                await client.get("/health"),
            )

    good, wrong, health = asyncio.run(main())

    assert good.json() == {"tenant": "free"}
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert error_of(wrong)["code"] == "invalid_api_key"
    assert health.status_code == 200


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_a_413_and_one_within_reaches_the_app(chunked: bool) -> None:
    app = App()

    def body(size: int) -> bytes | AsyncIterator[bytes]:
        if not chunked:  # sent with its content-length
            return b"x" * size

        async def chunks() -> AsyncIterator[bytes]:  # no length
            for start in range(0, size, 100):
                yield b"x" * min(100, size - start)

        return chunks()

    async def main() -> tuple[httpx.Response, httpx.Response]:
        async with app.client() as client:
            within = await client.post("/echo", content=body(LIMIT), headers=keyed("key-free"))
            over = await client.post("/echo", content=body(LIMIT + 1), headers=keyed("key-free"))
            return within, over

    within, over = asyncio.run(main())

    assert within.status_code == 200 and app.bodies == [b"x" * LIMIT]
    assert over.status_code == 413
    error = error_of(over)
    assert error["code"] == "request_too_large" and f"{LIMIT} bytes" in error["message"]


@pytest.mark.parametrize("path", ["/wait", "/stream"])
def test_a_tenant_at_its_limit_gets_a_429_until_its_request_ends(path: str) -> None:
    app = App()

    async def main() -> tuple[httpx.Response, httpx.Response, bytes, httpx.Response]:
        async with app.client() as client:
            first = asyncio.create_task(client.post(path, headers=keyed("key-solo")))
            await app.entered.wait()
            refused = await client.post(path, headers=keyed("key-solo"))
            other = await client.post("/echo", content=b"{}", headers=keyed("key-free"))
            app.release.set()
            ended = await first
            again = await client.post("/echo", content=b"{}", headers=keyed("key-solo"))
            assert other.status_code == 200
            return refused, ended, ended.content, again

    refused, ended, content, again = asyncio.run(main())

    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert error_of(refused)["code"] == "rate_limit_exceeded"
    assert ended.status_code == 200 and content in (b"{}", b"first\nlast\n")
    assert again.status_code == 200


def test_a_request_whose_client_left_gives_its_slot_back() -> None:
    app = App()

    async def main() -> httpx.Response:
        async with app.client() as client:
            leaving = asyncio.create_task(client.post("/wait", headers=keyed("key-solo")))
            await app.entered.wait()
            leaving.cancel()  # as Serve cancels the request of a client that disconnected
            with pytest.raises(asyncio.CancelledError):
                await leaving
            return await client.post("/echo", content=b"{}", headers=keyed("key-solo"))

    assert asyncio.run(main()).status_code == 200
