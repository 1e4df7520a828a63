"""A CrewAI crew that talks on an end-to-end encrypted Skytale channel through skytale-mcp.

The crew's agent gets the Skytale tools from the MCP server (`node .../skytale-mcp`, over
stdio), joins a channel with an invite token, sends a message and waits for the answer.
CrewAI starts a fresh server process for every tool call (the agent's keystore keeps the state
and the unread messages in between) and gives a call 30 s: keep receive's timeoutMs below that.

    # a dev stack and a channel with an invite: `npx skytale dev` prints the env to use
    export SKYTALE_API_KEY=… SKYTALE_API_URL=… SKYTALE_RELAY=… SKYTALE_KEYSTORE_KEY=…
    export SKYTALE_IDENTITY=crew-agent SKYTALE_CHANNEL=acme/crew/room SKYTALE_INVITE=skt_inv_…
    python crew_example.py            # with a real LLM: set CREWAI_LLM (e.g. openai/gpt-4o-mini) + its key
    python crew_example.py --scripted # no LLM: a scripted model plays the steps

The last line of stdout is `SKYTALE_RESULT {"result": "…"}` (used by the repository's test).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

from crewai import Agent, Crew, Process, Task  # noqa: E402
from crewai.mcp import MCPServerStdio  # noqa: E402

HERE = Path(__file__).resolve().parent
# The skytale-mcp bin: $SKYTALE_MCP_BIN, else this repository's copy.
MCP_BIN = os.environ.get("SKYTALE_MCP_BIN") or str(HERE.parent.parent / "integrations" / "mcp" / "bin" / "skytale-mcp.js")


def skytale_server() -> MCPServerStdio:
    # Only the SKYTALE_* settings reach the server (the MCP client adds PATH, HOME, …).
    env = {k: v for k, v in os.environ.items() if k.startswith("SKYTALE_") and k != "SKYTALE_MCP_TOKEN"}
    return MCPServerStdio(command=os.environ.get("SKYTALE_NODE", "node"), args=[MCP_BIN], env=env)


def build_llm(scripted: bool, channel: str, invite: str, text: str):
    if not scripted:
        return os.environ.get("CREWAI_LLM", "openai/gpt-4o-mini")
    from scripted_llm import ScriptedLLM, final_step, tool_step

    def received(obs: list) -> str:
        last = obs[-1] if obs else None
        if not isinstance(last, dict) or "messages" not in last:
            return f"no answer: {last}"
        return " | ".join(f"{m['sender']}: {m['text']}" for m in last["messages"]) or "no answer"

    return ScriptedLLM(model="scripted", steps=[
        tool_step("skytale_join", {"channel": channel, "token": invite, "timeoutMs": 60000}),
        tool_step("skytale_send", {"channel": channel, "text": text}),
        tool_step("skytale_receive", {"channel": channel, "timeoutMs": 20000}),
        final_step(received),
    ])


def main() -> int:
    scripted = "--scripted" in sys.argv
    channel = os.environ["SKYTALE_CHANNEL"]
    invite = os.environ["SKYTALE_INVITE"]
    text = os.environ.get("SKYTALE_TEXT", "Hello from the crew!")

    liaison = Agent(
        role="Skytale liaison",
        goal="Exchange messages with other agents over end-to-end encrypted Skytale channels",
        backstory="You talk to other agents only through the Skytale tools.",
        llm=build_llm(scripted, channel, invite, text),
        mcps=[skytale_server()],
        allow_delegation=False,
        max_iter=8,
        verbose=False,
    )
    task = Task(
        description=(
            f"Join the Skytale channel {channel} with the invite token {invite}, send the message "
            f"{text!r} there, then wait for an answer (receive with timeoutMs 20000) and report it."
        ),
        expected_output="The answer received on the channel, as 'sender: text'.",
        agent=liaison,
    )
    crew = Crew(agents=[liaison], tasks=[task], process=Process.sequential, verbose=False)
    result = crew.kickoff()
    print("SKYTALE_RESULT " + json.dumps({"result": result.raw}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
