"""End-to-end tests of skytale-bridge: a real slim-bindings (3.3.8) app ↔ the bridge ↔ the real
relay ↔ a Node SkytaleChannelManager agent. Run by tests/bridge/bridge.test.ts (npm test),
which starts the API server and relay and passes their coordinates in the environment."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python"))

from harness import Bridge, NodeAgent, app_entry, free_port, relay_store_bytes, uniq  # noqa: E402
from skytale_slim import SkytaleError, SlimApp  # noqa: E402

SECRET = "bridge-test-shared-secret-0123456789abcdef"
N = int(os.environ.get("SKYTALE_BRIDGE_N", "1000"))


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def stack(loop):
    """One bridge for app acme/agents/py-<x> (identity py-<x>) and one Node agent alice-<x>."""
    py_identity = uniq("py")
    app_name = f"acme/agents/{py_identity}"
    port = free_port()
    alice_identity = uniq("alice")
    peers = [{"name": f"acme/agents/{alice_identity}", "identity": alice_identity}]
    bridge = Bridge([app_entry(app_name, py_identity, SECRET, peers)], f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    loop.run_until_complete(bridge.start())
    alice = loop.run_until_complete(NodeAgent.start(alice_identity))
    state = {"bridge": bridge, "alice": alice, "app_name": app_name, "py_identity": py_identity,
             "endpoint": f"http://127.0.0.1:{port}"}
    yield state
    loop.run_until_complete(alice.close())
    loop.run_until_complete(state["bridge"].stop())


async def receive_n(session, n, timeout=120.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        m = await session.recv(timeout=max(1.0, deadline - time.monotonic()))
        if m.kind == "msg":
            out.append(m)
    return out


def test_invite_join_and_1000_each_way_in_order_relay_sees_ciphertext(loop, stack):
    async def main():
        alice, bridge = stack["alice"], stack["bridge"]
        channel = f"acme/bridge/{uniq('rt')}"
        await alice.call("create", channel=channel)
        token = await alice.call("invite", channel=channel, maxUses=1, ttlSeconds=600)
        assert token.startswith("skt_inv_")

        app = SlimApp(stack["app_name"], SECRET, stack["endpoint"])
        session = await app.open_channel(channel, op="join", token=token)
        members = (await session.control("members"))["members"]
        assert sorted(members) == sorted([stack["py_identity"], alice.identity])

        # Python → Node: N messages, in order, exactly once.
        t0 = time.monotonic()
        for i in range(N):
            await session.send(f"py-{i}-secret-marker-PYPLAIN")
        got = await alice.call("receiveN", channel=channel, count=N, timeoutMs=60_000 + N * 100)
        print("to_channel", bridge.metric("skytale_bridge_to_channel_total"), "got", len(got))
        assert got == [f"py-{i}-secret-marker-PYPLAIN" for i in range(N)]
        py_to_node = time.monotonic() - t0

        # Node → Python: N messages, in relay order, with sender and seq.
        t0 = time.monotonic()
        sender_task = asyncio.ensure_future(_send_many(alice, channel, "node-{}-secret-marker-NODEPLAIN", N))
        msgs = await receive_n(session, N, timeout=300)
        await sender_task
        node_to_py = time.monotonic() - t0
        assert [m.text for m in msgs] == [f"node-{i}-secret-marker-NODEPLAIN" for i in range(N)]
        seqs = [m.seq for m in msgs]
        assert seqs == sorted(seqs) and len(set(seqs)) == N
        assert all(m.sender == alice.identity for m in msgs)
        # Nothing more (exactly once).
        with pytest.raises(Exception):
            await session.recv(timeout=1.0)

        store = relay_store_bytes()
        assert b"PYPLAIN" not in store and b"NODEPLAIN" not in store
        assert bridge.metric("skytale_bridge_to_channel_total") >= N
        print(f"\n{N} py→node in {py_to_node:.1f}s, {N} node→py in {node_to_py:.1f}s")
        app.close()

    loop.run_until_complete(main())


async def _send_many(agent, channel, fmt, n, pause=0.0):
    for i in range(n):
        await agent.call("send", channel=channel, text=fmt.format(i))
        if pause:
            await asyncio.sleep(pause)


def test_bridge_kill9_and_restart_while_node_keeps_sending(loop, stack):
    async def main():
        alice = stack["alice"]
        channel = f"acme/bridge/{uniq('crash')}"
        await alice.call("create", channel=channel)
        token = await alice.call("invite", channel=channel, maxUses=1, ttlSeconds=600)
        app = SlimApp(stack["app_name"], SECRET, stack["endpoint"])
        session = await app.open_channel(channel, op="join", token=token)
        await session.control("members")
        total = 300
        # Paced (≈ 3 s of sending) so that sends go on before, during and after the restart.
        sender = asyncio.ensure_future(_send_many(alice, channel, "m-{}", total, pause=0.01))
        first = await receive_n(session, 60)
        stack["bridge"].kill9()
        t_kill = time.monotonic()
        await stack["bridge"].proc.wait()
        await asyncio.sleep(1.0)
        app.close()
        bridge2 = Bridge.__new__(Bridge)
        bridge2.__dict__.update(stack["bridge"].__dict__)
        await bridge2.start()
        stack["bridge"] = bridge2
        app2 = SlimApp(stack["app_name"], SECRET, stack["endpoint"])
        session2 = await app2.open_channel(channel)
        session2.last_seq = session.last_seq
        print(f"\nbridge down and back up with a new session in {time.monotonic() - t_kill:.1f}s; sender done: {sender.done()}")
        await sender
        rest = await receive_n(session2, total - len(first), timeout=180)
        texts = [m.text for m in first + rest]
        assert texts == [f"m-{i}" for i in range(total)]
        print(f"\nrestart: {len(first)} before kill -9, {len(rest)} after, {session2.repeats_dropped} redelivered repeats dropped by seq")
        with pytest.raises(Exception):
            await session2.recv(timeout=1.0)
        app2.close()

    loop.run_until_complete(main())


def test_other_org_channel_refused_with_code(loop, stack):
    async def main():
        app = SlimApp(stack["app_name"], SECRET, stack["endpoint"])
        session = await app.open_channel("globex/ops/alerts")
        with pytest.raises(SkytaleError) as err:
            await session.recv(timeout=10)
        assert err.value.code == "SKYTALE_FORBIDDEN"
        app.close()

    loop.run_until_complete(main())


def test_control_errors_have_codes(loop, stack):
    async def main():
        app = SlimApp(stack["app_name"], SECRET, stack["endpoint"])
        channel = f"acme/bridge/{uniq('ctl')}"
        session = await app.open_channel(channel, op="join", token="skt_inv_garbage")
        with pytest.raises(SkytaleError) as err:
            await session.recv(timeout=30)
        assert err.value.code.startswith("SKYTALE_INVITE")
        # Create through a control message, then invite.
        await session.control("create")
        token = (await session.control("invite", maxUses=1, ttlSecs=600))["token"]
        assert token.startswith("skt_inv_")
        assert (await session.control("members"))["members"] == [stack["py_identity"]]
        with pytest.raises(SkytaleError) as err:
            await session.control("frobnicate")
        assert err.value.code == "SKYTALE_INVALID_ARGUMENT"
        app.close()

    loop.run_until_complete(main())


def test_wrong_secret_and_unknown_app_refused(loop, stack):
    async def main():
        bridge = stack["bridge"]
        before = bridge.metric("skytale_bridge_auth_failures_total")
        bad = SlimApp(stack["app_name"], "x" * 40, stack["endpoint"])
        with pytest.raises(Exception):
            await bad.open_channel(f"acme/bridge/{uniq('bad')}", timeout=15)
        bad.close()
        unknown = SlimApp("acme/agents/nobody", SECRET, stack["endpoint"])
        with pytest.raises(Exception):
            await unknown.open_channel(f"acme/bridge/{uniq('bad')}", timeout=15)
        unknown.close()
        assert bridge.metric("skytale_bridge_auth_failures_total") > before
        assert "SKYTALE_AUTH_REFUSED" in bridge.log_text()

    loop.run_until_complete(main())


def test_p2p_session_to_a_node_agent_is_a_two_member_channel(loop, stack):
    async def main():
        import datetime
        import hashlib

        import slim_bindings as slim

        alice = stack["alice"]
        pair = sorted([stack["py_identity"], alice.identity])
        channel = "acme/p2p/" + hashlib.sha256(f"{pair[0]}|{pair[1]}".encode()).hexdigest()[:32]
        app = SlimApp(stack["app_name"], SECRET, stack["endpoint"])
        config = slim.SessionConfig(session_type=slim.SessionType.POINT_TO_POINT, max_retries=10,
                                    interval=datetime.timedelta(milliseconds=500), metadata={}, mls_settings=None)
        raw = await asyncio.wait_for(app.app.create_session_and_wait_async(
            config, slim.Name.from_string(f"acme/agents/{alice.identity}")), 30)
        from skytale_slim import ChannelSession
        session = ChannelSession(raw, channel)
        for _ in range(100):
            if channel in await alice.call("channels"):
                break
            await asyncio.sleep(0.2)
        assert sorted(await alice.call("members", channel=channel)) == pair
        await session.send("hello p2p")
        assert await alice.call("receiveN", channel=channel, count=1, timeoutMs=30_000) == ["hello p2p"]
        await alice.call("send", channel=channel, text="hi back")
        while True:
            m = await session.recv(timeout=30)
            if m.kind == "msg":
                break
        assert m.text == "hi back" and m.sender == alice.identity
        app.close()

    loop.run_until_complete(main())


def test_metrics_and_grpc_health(loop, stack):
    import urllib.error
    import urllib.request

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    bridge = stack["bridge"]
    text = urllib.request.urlopen(f"http://{bridge.metrics}/metrics", timeout=5).read().decode()
    assert "skytale_bridge_to_channel_total" in text and "skytale_bridge_auth_failures_total" in text
    # A request that arrives in pieces is read whole before it is answered (the endpoint used to
    # answer whatever its first read held: here a 404 for "/metr").
    import socket

    host, port = bridge.metrics.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        for piece in (b"GET /metr", b"ics HTTP/1.1\r\nHost: bridge\r\n", b"\r\n"):
            sock.sendall(piece)
            time.sleep(0.2)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    assert b"skytale_bridge_sessions_total" in answer
    # Other paths and methods get their status, not the counters.
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://{bridge.metrics}/nothing-here", timeout=5)
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as post:
        urllib.request.urlopen(f"http://{bridge.metrics}/metrics", data=b"x", timeout=5)
    assert post.value.code == 405
    with grpc.insecure_channel(bridge.health) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "skytale.bridge"):
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_two_python_apps_behind_two_bridges_and_a_node_agent_share_one_channel(loop, stack):
    async def main():
        alice, bridge1 = stack["alice"], stack["bridge"]
        # A second Python app behind its own bridge (another identity, another keystore).
        py2_identity = uniq("py2")
        app2_name = f"acme/agents/{py2_identity}"
        port2 = free_port()
        bridge2 = Bridge([app_entry(app2_name, py2_identity, SECRET)], f"127.0.0.1:{port2}", f"127.0.0.1:{free_port()}")
        await bridge2.start()
        try:
            channel = f"acme/bridge/{uniq('three')}"
            await alice.call("create", channel=channel)
            token = await alice.call("invite", channel=channel, maxUses=2, ttlSeconds=600)
            app1 = SlimApp(stack["app_name"], SECRET, stack["endpoint"])
            app2 = SlimApp(app2_name, SECRET, f"http://127.0.0.1:{port2}")
            s1 = await app1.open_channel(channel, op="join", token=token)
            s2 = await app2.open_channel(channel, op="join", token=token)
            want = sorted([alice.identity, stack["py_identity"], py2_identity])
            deadline = time.monotonic() + 60
            while sorted((await s1.control("members"))["members"]) != want:
                assert time.monotonic() < deadline, "the three members never converged"
                await asyncio.sleep(0.2)
            assert sorted((await s2.control("members"))["members"]) == want

            # Each side sends; the two others receive everything, in relay order, once.
            await s1.send("from-py1")
            await s2.send("from-py2")
            await alice.call("send", channel=channel, text="from-node")
            at_node = await alice.call("receiveN", channel=channel, count=2, timeoutMs=60_000)
            assert sorted(at_node) == ["from-py1", "from-py2"]
            got1 = [m for m in await receive_n(s1, 2, timeout=60)]
            got2 = [m for m in await receive_n(s2, 2, timeout=60)]
            assert sorted(m.text for m in got1) == ["from-node", "from-py2"]
            assert sorted(m.text for m in got2) == ["from-node", "from-py1"]
            assert {m.sender for m in got1} == {alice.identity, py2_identity}
            assert {m.sender for m in got2} == {alice.identity, stack["py_identity"]}
            # Both Python apps see the relay's order.
            seq_of = lambda msgs: {m.text: m.seq for m in msgs}  # noqa: E731
            assert seq_of(got1)["from-node"] == seq_of(got2)["from-node"]
            app1.close()
            app2.close()
        finally:
            await bridge2.stop()

    loop.run_until_complete(main())
