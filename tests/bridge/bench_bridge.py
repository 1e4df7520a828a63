"""Benchmark (BENCHMARKS.md, "SLIM bridge"): round trips of 256-byte messages
  A. Python (slim-bindings) → skytale-bridge → relay → Node SkytaleChannelManager (echo) → relay
     → bridge → Python, and
  B. Python app → SLIM's own node (slim-bindings `run_server`) → Python echo app → node → Python,
     GROUP session, MLS off, in the same run.
Sequential request/reply (p50/p99) and pipelined throughput. Needs the stack's environment
(see harness.py); run: python tests/bridge/bench_bridge.py [rounds] [pipelined]."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python"))

import slim_bindings as slim  # noqa: E402
from harness import API_KEY, API_URL, NODE, RELAY, ROOT, Bridge, app_entry, free_port, uniq  # noqa: E402
from skytale_slim import SlimApp, _init  # noqa: E402

SECRET = "bridge-bench-shared-secret-0123456789abcdef"
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
PIPE = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
PAD = "x" * 240


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def report(name, rtts, n, secs):
    ms = [x * 1000 for x in rtts]
    return {"path": name, "rounds": len(ms), "p50_ms": round(pct(ms, 50), 2), "p99_ms": round(pct(ms, 99), 2),
            "mean_ms": round(statistics.mean(ms), 2), "pipelined_msgs": n, "pipelined_per_s": round(n / secs)}


async def bench_bridge():
    ident = uniq("pyb")
    app_name = f"acme/bench/{ident}"
    port = free_port()
    bridge = Bridge([app_entry(app_name, ident, SECRET)], f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    await bridge.start()
    channel = f"acme/bench/{uniq('rt')}"
    worker = os.path.join(os.path.dirname(__file__), "echo-worker.mjs")
    opts = {"identity": uniq("echo"), "apiKey": API_KEY, "apiUrl": API_URL, "relay": RELAY,
            "dataDir": os.path.join(ROOT, "bench", uniq("echo")), "keystoreKey": os.urandom(32).hex(),
            "channel": channel, "create": True}
    echo = await asyncio.create_subprocess_exec(NODE, worker, json.dumps(opts), stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE)
    token = json.loads(await echo.stdout.readline())["token"]
    await echo.stdout.readline()  # ready
    app = SlimApp(app_name, SECRET, f"http://127.0.0.1:{port}")
    chan = await app.open_channel(channel, op="join", token=token)
    await chan.control("members")

    async def echo_of(text):
        while True:
            m = await chan.recv(timeout=30)
            if m.kind == "msg" and m.text == "echo:" + text:
                return

    for i in range(20):  # warm-up
        await chan.send(f"w{i}{PAD}")
        await echo_of(f"w{i}{PAD}")
    rtts = []
    for i in range(ROUNDS):
        t = time.perf_counter()
        await chan.send(f"r{i}{PAD}")
        await echo_of(f"r{i}{PAD}")
        rtts.append(time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(PIPE):
        await chan.send(f"p{i}{PAD}")
    got = 0
    while got < PIPE:
        m = await chan.recv(timeout=60)
        if m.kind == "msg" and m.text.startswith("echo:p"):
            got += 1
    secs = time.perf_counter() - t
    echo.stdin.close()
    await echo.wait()
    app.close()
    await bridge.stop()
    return report("Python → bridge → relay → Node echo → relay → bridge → Python", rtts, PIPE, secs)


async def bench_slim_node():
    _init()
    port = free_port()
    node = slim.Service("bench-node")
    await node.run_server_async(slim.new_insecure_server_config(f"127.0.0.1:{port}"))
    await asyncio.sleep(0.5)
    endpoint = f"http://127.0.0.1:{port}"
    a_svc, b_svc = slim.Service("bench-a"), slim.Service("bench-b")
    a = a_svc.create_app_with_secret(slim.Name.from_string("acme/bench/a"), SECRET)
    b = b_svc.create_app_with_secret(slim.Name.from_string("acme/bench/b"), SECRET)
    ca = a_svc.connect(slim.new_insecure_client_config(endpoint))
    cb = b_svc.connect(slim.new_insecure_client_config(endpoint))
    a.subscribe(a.name(), ca)
    b.subscribe(b.name(), cb)

    async def echo_loop():
        s = await b.listen_for_session_async(None)
        while True:
            msg = await s.get_message_async(None)
            await s.publish_async(b"echo:" + bytes(msg.payload), None, None)

    echo_task = asyncio.ensure_future(echo_loop())
    cfg = slim.SessionConfig(session_type=slim.SessionType.GROUP, max_retries=10,
                             interval=datetime.timedelta(milliseconds=500), metadata={}, mls_settings=None)
    s = await a.create_session_and_wait_async(cfg, slim.Name.from_string("acme/bench/chan"))
    await s.invite_and_wait_async(slim.Name.from_string("acme/bench/b"))

    async def rt(text):
        await s.publish_async(text.encode(), None, None)
        while True:
            m = await s.get_message_async(datetime.timedelta(seconds=30))
            if bytes(m.payload) == b"echo:" + text.encode():
                return

    for i in range(20):
        await rt(f"w{i}{PAD}")
    rtts = []
    for i in range(ROUNDS):
        t = time.perf_counter()
        await rt(f"r{i}{PAD}")
        rtts.append(time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(PIPE):
        await s.publish_async(f"p{i}{PAD}".encode(), None, None)
    got = 0
    while got < PIPE:
        m = await s.get_message_async(datetime.timedelta(seconds=60))
        if bytes(m.payload).startswith(b"echo:p"):
            got += 1
    secs = time.perf_counter() - t
    echo_task.cancel()
    return report("Python → SLIM node (slim-bindings) → Python echo → node → Python", rtts, PIPE, secs)


async def main():
    results = [await bench_bridge(), await bench_slim_node()]
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    asyncio.run(main())
