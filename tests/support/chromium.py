"""A real headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for pages a person
uses (typing, clicking), with nothing but aiohttp: start it on a free debugging port, open a page,
evaluate JavaScript in it, wait for a condition, take a screenshot."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self.console: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive(timeout=60)).data)
            if msg.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in
                                             msg["params"].get("args", [])))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result

    async def js(self, expression: str) -> Any:
        """The value of `expression` in the page (promises awaited)."""
        out = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in out:
            raise AssertionError(f"{expression[:80]}: {out['exceptionDetails']}")
        return out.get("result", {}).get("value")

    async def until(self, expression: str, *, timeout: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or expression}")
            await asyncio.sleep(0.1)

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        # The old page may still answer "complete" before the navigation commits: wait for the new one.
        await self.until(f"location.href === {json.dumps(url)} && document.readyState === 'complete'",
                         what=f"{url} loaded")

    async def screenshot(self, path: Path, width: int = 1400, height: int = 1000) -> bytes:
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)
        shot = await self.call("Page.captureScreenshot", format="png")
        data = base64.b64decode(shot["data"])
        await anyio.Path(path).write_bytes(data)
        return data


@asynccontextmanager
async def chromium_page(tmp: Path) -> AsyncIterator[Page]:
    if not await anyio.Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make setup` installs Debian's package (apt-get install chromium)")
    profile = tmp / "chromium-profile"
    # --no-sandbox: CI runs as root, where Chromium refuses its sandbox. The dead proxy makes any fetch
    # beyond loopback fail (loopback bypasses a proxy by default), so a page that needed the network
    # would show it.
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
        "--proxy-server=127.0.0.1:9", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        port_file = anyio.Path(profile / "DevToolsActivePort")
        deadline = time.monotonic() + 60
        while not await port_file.is_file() or not (await port_file.read_text()).strip():
            if time.monotonic() > deadline or proc.returncode is not None:
                raise AssertionError("chromium did not open its debugging port")
            await asyncio.sleep(0.1)
        port = int((await port_file.read_text()).splitlines()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(url, max_msg_size=64 * 1024 * 1024) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                await page.call("Runtime.enable")
                yield page
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
