"""A scripted CrewAI LLM: plays a fixed list of ReAct steps, no network, no model.

Each step is ("tool", <skytale tool name>, <args dict or callable(observations) -> dict>) or
("final", <callable(observations) -> str>). CrewAI prefixes MCP tool names with a name derived
from the server's command line (and may shorten long names with a hash), so the real name is
looked up in the prompt's tool list: the entry whose name ends with the tool name, or else whose
description is the Skytale tool's description.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from crewai import BaseLLM
from pydantic import PrivateAttr

# The start of each tool's description in @skytale/mcp (used when the name was shortened).
DESCRIPTIONS = {
    "skytale_create_channel": "Create a new end-to-end encrypted Skytale channel",
    "skytale_invite": "Create an invite token",
    "skytale_join": "Join a channel with an invite token",
    "skytale_send": "Send an end-to-end encrypted text message",
    "skytale_receive": "Read new messages from a channel",
    "skytale_channels": "List the channels this agent is a member of",
    "skytale_members": "List the identities of the members",
    "skytale_remove_member": "Remove a member from a channel",
    "skytale_leave": "Leave a channel",
}


def _text(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    return "\n".join(str(m.get("content", "")) for m in messages)


def find_tool_name(prompt: str, tool: str) -> str:
    """The full (prefixed) name CrewAI gave to the MCP tool `tool`."""
    names = re.findall(r"Tool Name: ([^\n]+)", prompt)
    for name in names:
        if name.strip().endswith(tool):
            return name.strip()
    blocks = re.split(r"(?=Tool Name: )", prompt)
    for block in blocks:
        m = re.match(r"Tool Name: ([^\n]+)", block)
        if m and DESCRIPTIONS[tool] in block:
            return m.group(1).strip()
    raise RuntimeError(f"tool {tool} not found in the prompt's tool list: {names}")


def observations(messages: Any) -> list[Any]:
    """The tool results seen so far (parsed JSON where possible), oldest first. Only the
    assistant turns count: the format instructions in the prompt mention "Observation:" too."""
    if isinstance(messages, str):
        turns = [messages.split("Begin!", 1)[-1]]
    else:
        turns = [str(m.get("content", "")) for m in messages if m.get("role") == "assistant"]
    found: list[Any] = []
    for turn in turns:
        # One tool result per turn; CrewAI may append its tool list (with the format text) after it.
        if "Observation:" not in turn:
            continue
        chunk = turn.split("Observation:", 1)[1].strip()
        try:
            found.append(json.JSONDecoder().raw_decode(chunk)[0])
        except ValueError:
            found.append(chunk.split("\n\n", 1)[0])
    return found


class ScriptedLLM(BaseLLM):
    """Returns the next ReAct step of `steps` on every call."""

    steps: list[Any]
    _index: int = PrivateAttr(default=0)
    _prompt: str = PrivateAttr(default="")

    def call(self, messages, tools=None, callbacks=None, available_functions=None,
             from_task=None, from_agent=None, response_model=None) -> str:
        text = _text(messages)
        if "Tool Name:" in text and not self._prompt:
            self._prompt = text
        seen = observations(messages)
        # One step per tool result seen: robust to CrewAI re-asking after a format problem.
        index = min(len(seen), len(self.steps) - 1)
        step = self.steps[index]
        if step[0] == "tool":
            _, tool, args = step
            if callable(args):
                args = args(seen)
            reply = (f"Thought: I should use {tool}.\n"
                     f"Action: {find_tool_name(self._prompt or text, tool)}\n"
                     f"Action Input: {json.dumps(args)}")
        else:
            reply = f"Thought: I now know the final answer.\nFinal Answer: {step[1](seen)}"
        return reply

    def supports_function_calling(self) -> bool:
        return False

    def supports_stop_words(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 8192


def tool_step(tool: str, args: dict | Callable[[list[Any]], dict]) -> tuple:
    return ("tool", tool, args)


def final_step(answer: Callable[[list[Any]], str]) -> tuple:
    return ("final", answer)
