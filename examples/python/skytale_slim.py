"""A few lines over slim-bindings (pip slim-bindings==3.3.8) for talking to Skytale channels
through a local skytale-bridge.

The bridge holds your Skytale identity; this app only speaks plain SLIM to it on loopback:
open a GROUP session whose channel name is the Skytale channel (org/namespace/service), invite
the bridge's participant for this app (``<your app name>-skytale``), publish, receive.

Every channel message carries metadata ``skytale-sender``, ``skytale-seq`` (relay order),
``skytale-epoch`` and ``skytale-channel``. Across a bridge crash, delivery is at least once
(nothing is lost: the bridge acknowledges its keystore inbox only after SLIM completes the
publish); :class:`ChannelSession` drops any ``skytale-seq`` it has already seen, so the
application sees each message exactly once, in relay order.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from typing import Optional

import slim_bindings as slim

DEFAULT_BRIDGE = "http://127.0.0.1:46357"
_initialized = False
_loop = None


def _init() -> None:
    global _initialized, _loop
    loop = asyncio.get_running_loop()
    if loop is not _loop:
        slim.uniffi_set_event_loop(loop)
        _loop = loop
    if not _initialized:
        slim.initialize_with_defaults()
        _initialized = True


class SkytaleError(Exception):
    """An error from the bridge, with a stable ``SKYTALE_*`` code."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Message:
    """A channel message: ``sender``, ``seq``, ``data`` (bytes), ``kind`` (payload type)."""

    def __init__(self, kind: str, data: bytes, metadata: dict):
        self.kind = kind
        self.data = data
        self.metadata = metadata
        self.sender = metadata.get("skytale-sender")
        self.seq = int(metadata.get("skytale-seq", "0"))

    @property
    def text(self) -> str:
        return self.data.decode()


class SlimApp:
    """A slim-bindings app connected to a skytale-bridge (one SLIM Service per app)."""

    def __init__(self, name: str, secret: str, bridge: str = DEFAULT_BRIDGE):
        _init()
        self.name = name
        self.service = slim.Service(f"svc-{uuid.uuid4().hex[:8]}")
        self.app = self.service.create_app_with_secret(slim.Name.from_string(name), secret)
        self.conn = self.service.connect(slim.new_insecure_client_config(bridge))
        self.app.subscribe(self.app.name(), self.conn)

    async def open_channel(self, channel: str, *, op: Optional[str] = None, token: Optional[str] = None,
                           twin: Optional[str] = None, timeout: float = 30.0) -> "ChannelSession":
        """Opens a GROUP session on ``channel`` and invites the bridge. ``op`` = ``"create"`` or
        ``"join"`` (with ``token``, an ``skt_inv_…`` invite) runs that first."""
        metadata = {}
        if op:
            metadata["skytale-op"] = op
        if token:
            metadata["skytale-token"] = token
        config = slim.SessionConfig(session_type=slim.SessionType.GROUP, max_retries=10,
                                    interval=datetime.timedelta(milliseconds=500), metadata=metadata,
                                    mls_settings=None)
        session = await asyncio.wait_for(
            self.app.create_session_and_wait_async(config, slim.Name.from_string(channel)), timeout)
        twin_name = slim.Name.from_string(twin or f"{self.name}-skytale")
        await asyncio.wait_for(session.invite_and_wait_async(twin_name), timeout)
        return ChannelSession(session, channel)

    def close(self) -> None:
        try:
            self.service.disconnect(self.conn)
        except Exception:  # noqa: BLE001 - best effort
            pass


class ChannelSession:
    """One Skytale channel as a SLIM GROUP session."""

    def __init__(self, session, channel: str):
        self.session = session
        self.channel = channel
        self.last_seq = 0
        self.repeats_dropped = 0
        self._pending: list = []

    async def send(self, data: bytes | str) -> None:
        """Publishes to the channel (the bridge encrypts it; the relay sees ciphertext)."""
        if isinstance(data, str):
            data = data.encode()
        await self.session.publish_async(data, None, None)

    async def _next_raw(self, timeout: float):
        if self._pending:
            return self._pending.pop(0)
        msg = await self.session.get_message_async(datetime.timedelta(seconds=timeout))
        return msg.context.payload_type, bytes(msg.payload), dict(msg.context.metadata)

    async def recv(self, timeout: float = 30.0) -> Message:
        """The next channel message (or membership change, ``kind == "skytale.members"``),
        in relay order, each once. Raises :class:`SkytaleError` for an error from the bridge."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = max(0.05, deadline - asyncio.get_running_loop().time())
            kind, data, meta = await self._next_raw(left)
            if kind == "skytale.error":
                err = json.loads(data)
                raise SkytaleError(err.get("code", "SKYTALE_UNKNOWN"), err.get("message", ""))
            if kind == "skytale.control.reply":
                continue
            m = Message(kind, data, meta)
            if m.seq and m.seq <= self.last_seq:
                self.repeats_dropped += 1
                continue  # already seen (redelivered after a bridge restart)
            if m.seq:
                self.last_seq = m.seq
            return m

    async def control(self, op: str, timeout: float = 60.0, **args) -> dict:
        """Runs a control operation (invite, members, add, create, join, leave); returns the
        reply or raises :class:`SkytaleError`."""
        rid = uuid.uuid4().hex[:8]
        body = json.dumps({"op": op, "id": rid, **args}).encode()
        await self.session.publish_async(body, "skytale.control", None)
        deadline = asyncio.get_running_loop().time() + timeout
        held = []
        try:
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise SkytaleError("SKYTALE_TIMEOUT", f"no reply to {op}")
                kind, data, meta = await self._next_raw(left)
                if kind == "skytale.control.reply":
                    reply = json.loads(data)
                    if reply.get("id") != rid:
                        continue
                    if not reply.get("ok"):
                        raise SkytaleError(reply.get("code", "SKYTALE_UNKNOWN"), reply.get("message", ""))
                    return reply
                if kind == "skytale.error":
                    err = json.loads(data)
                    raise SkytaleError(err.get("code", "SKYTALE_UNKNOWN"), err.get("message", ""))
                held.append((kind, data, meta))
        finally:
            self._pending = held + self._pending
