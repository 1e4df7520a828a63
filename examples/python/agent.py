"""A SLIM agent on a Skytale channel, through a local skytale-bridge.

    pip install slim-bindings==3.3.8
    skytale-bridge --config bridge.json &      # holds this agent's Skytale identity
    python agent.py acme/agents/researcher "$SLIM_SECRET" acme/research/general "skt_inv_…"

The Node side (e.g. examples/python/node_peer.mjs) creates the channel and hands out the
invite token; this agent joins with it, says hello, and echoes what the others say.
"""

import asyncio
import sys

from skytale_slim import SlimApp


async def main(app_name: str, secret: str, channel: str, token: str | None) -> None:
    app = SlimApp(app_name, secret)                                    # SLIM app → the bridge
    chan = await app.open_channel(channel, op="join" if token else None, token=token)
    await chan.send(f"hello from {app_name}")                          # encrypted by the bridge
    while True:
        msg = await chan.recv(timeout=3600)                            # relay order, each once
        if msg.kind == "msg":
            print(f"[{msg.seq}] {msg.sender}: {msg.text}")
            await chan.send(f"echo: {msg.text}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None))
