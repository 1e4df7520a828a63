"""Test harness: a Node SkytaleChannelManager agent in its own process (tests/helpers/
manager-worker.mjs, JSON lines), and the skytale-bridge binary, on the stack that
tests/bridge/bridge.test.ts started (its coordinates come in environment variables)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import tempfile
import urllib.request

ENV = os.environ
NODE = ENV.get("SKYTALE_NODE", "node")
API_URL = ENV["SKYTALE_API_URL"]
API_KEY = ENV["SKYTALE_API_KEY"]
RELAY = ENV["SKYTALE_RELAY"]
BRIDGE_BIN = ENV["SKYTALE_BRIDGE_BIN"]
WORKER = ENV["SKYTALE_MANAGER_WORKER"]
RELAY_DATA = ENV["SKYTALE_RELAY_DATA_DIR"]
ROOT = ENV.get("SKYTALE_TEST_ROOT") or tempfile.mkdtemp(prefix="skytale-bridge-py-")


def uniq(s: str) -> str:
    return f"{s}-{secrets.token_hex(3)}"


class NodeAgent:
    """A SkytaleChannelManager in a Node process."""

    def __init__(self, proc):
        self.proc = proc
        self.next = 1
        self.pending: dict[int, asyncio.Future] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, identity: str) -> "NodeAgent":
        proc = await asyncio.create_subprocess_exec(NODE, WORKER, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                    limit=64 * 1024 * 1024)
        agent = cls(proc)
        agent.identity = identity
        await agent.call("start", identity=identity, apiKey=API_KEY, apiUrl=API_URL, relay=RELAY,
                         dataDir=os.path.join(ROOT, "agents", identity), keystoreKey=secrets.token_hex(32))
        return agent

    async def _read(self):
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                for f in self.pending.values():
                    if not f.done():
                        f.set_exception(RuntimeError("node agent exited"))
                return
            msg = json.loads(line)
            fut = self.pending.pop(msg["id"], None)
            if fut is None or fut.done():
                continue
            if msg["ok"]:
                fut.set_result(msg.get("value"))
            else:
                fut.set_exception(RuntimeError(f"{msg.get('code')}: {msg.get('message')}"))

    async def call(self, op: str, **args):
        rid = self.next
        self.next += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        self.proc.stdin.write((json.dumps({"id": rid, "op": op, "args": args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await fut

    async def close(self):
        try:
            await asyncio.wait_for(self.call("close"), 10)
        except Exception:  # noqa: BLE001
            pass
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


class Bridge:
    """The skytale-bridge binary with a generated config."""

    def __init__(self, apps: list[dict], listen: str, metrics: str, health: str | None = None):
        self.dir = tempfile.mkdtemp(prefix="bridge-", dir=ROOT)
        self.listen = listen
        self.metrics = metrics
        self.health = health or f"127.0.0.1:{free_port()}"
        self.config_path = os.path.join(self.dir, "bridge.json")
        with open(self.config_path, "w") as f:
            json.dump({"listen": listen, "metrics_listen": metrics, "health_grpc_listen": self.health, "api_url": API_URL, "api_key": API_KEY,
                       "relay": RELAY, "apps": apps}, f)
        self.proc = None
        self.log = open(os.path.join(self.dir, "bridge.log"), "ab")

    async def start(self, timeout: float = 120.0):
        self.proc = await asyncio.create_subprocess_exec(BRIDGE_BIN, "--config", self.config_path,
                                                         stdout=subprocess.PIPE, stderr=self.log,
                                                         env={**ENV, "RUST_LOG": ENV.get("RUST_LOG", "info,slim=warn")})
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"bridge exited before ready; log in {self.log.name}")
        ready = json.loads(line)
        assert ready["ready"] is True
        return self

    def kill9(self):
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self):
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def metric(self, name: str) -> int:
        text = urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return int(line.split()[1])
        raise KeyError(name)

    def log_text(self) -> str:
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")


def free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def app_entry(name: str, identity: str, secret: str, peers: list | None = None) -> dict:
    return {"name": name, "secret": secret, "identity": identity, "peers": peers or [],
            "keystore_dir": os.path.join(ROOT, "bridge-keystores", identity), "keystore_key": _key(identity)}


_keys: dict[str, str] = {}


def _key(identity: str) -> str:
    return _keys.setdefault(identity, secrets.token_hex(32))


def relay_store_bytes() -> bytes:
    out = b""
    for dirpath, _, files in os.walk(RELAY_DATA):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out += fh.read()
    return out
