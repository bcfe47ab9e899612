"""A small asyncio client of the Kubernetes REST API (JSON only), for the node agent."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

Obj = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"{status}: {message}")


class Api:
    def __init__(self, server: str, token: str, ca: str) -> None:
        self.server = server
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._ssl = ssl.create_default_context(cafile=ca)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=64),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        async with self.session.request(
            method,
            self.server + path,
            data=data,
            params=params,
            headers={"Content-Type": content_type},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = text
            if resp.status >= 400:
                raise ApiError(resp.status, parsed)
            return parsed

    async def get(self, path: str, **params: str) -> Any:
        return await self.request("GET", path, params=params or None)

    async def create(self, path: str, body: Obj) -> Any:
        return await self.request("POST", path, body)

    async def merge_patch(self, path: str, body: Obj) -> Any:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def delete(self, path: str, body: Obj | None = None) -> Any:
        return await self.request("DELETE", path, body)

    async def watch(self, path: str, **params: str) -> AsyncIterator[tuple[str, Obj]]:
        """List, then watch from the list's version; relists after a 410 or a dropped stream.
        Yields ("ADDED"|"MODIFIED"|"DELETED", object); a relist yields every object again."""
        while True:
            try:
                listing = await self.get(path, **params)
            except (TimeoutError, ApiError, aiohttp.ClientError, OSError):
                await asyncio.sleep(1)
                continue
            version = listing["metadata"]["resourceVersion"]
            for item in listing["items"]:
                yield "ADDED", item
            try:
                async with self.session.get(
                    self.server + path,
                    params={
                        **params,
                        "watch": "1",
                        "resourceVersion": version,
                        "allowWatchBookmarks": "true",
                        "timeoutSeconds": "300",
                    },
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=330),
                ) as resp:
                    if resp.status != 200:
                        await asyncio.sleep(1)
                        continue
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            break
                        if event["type"] == "BOOKMARK":
                            continue
                        yield event["type"], event["object"]
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                await asyncio.sleep(0.5)
