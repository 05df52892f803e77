"""Turns in every spelling the public formats use, brought to the lab's {"role", "content"} messages.

Each function raises ValueError with the problem in words; the caller adds the row's place.
"""

from __future__ import annotations

import json
import re

# What each format calls the roles the lab keeps (ShareGPT: human/gpt; OpenAI, TRL, LLaMA-Factory: user/assistant).
ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
# Keys a message may carry that change nothing the lab stores ("name" labels a speaker; "weight" is read separately).
IGNORED_KEYS = {"name", "weight"}
# Anthropic HH-RLHF writes a conversation as one text: "\n\nHuman: …\n\nAssistant: …".
TRANSCRIPT_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):")


def parse_json_cell(value: object, column: str) -> object:
    """A list or object as CSV holds it, in a JSON text; any other value unchanged."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"the '{column}' cell is not valid JSON ({err.msg} at column {err.colno})") from err
    return value


def turn(message: object, where: str) -> dict:
    """One message as {"role", "content"}: `role`/`content` or ShareGPT's `from`/`value`, a role the lab keeps."""
    if not isinstance(message, dict):
        raise ValueError(f"{where} must be an object with a role and a content")
    # Parquet fills keys that other rows have with None; only real values count
    message = {k: v for k, v in message.items() if v is not None}
    role = message.get("role", message.get("from"))
    content = message.get("content", message.get("value"))
    extra = set(message) - {"role", "from", "content", "value"} - IGNORED_KEYS
    if extra:
        keys = ", ".join(f"'{k}'" for k in sorted(extra))
        raise ValueError(f"{where} has {keys}; a message has a role and a content (or from and value)")
    if role not in ROLES:
        raise ValueError(f"{where} has role '{role}' (the lab keeps system, user and assistant turns)")
    if isinstance(content, list):  # OpenAI's content parts: text parts only
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            raise ValueError(f"{where} has content parts that are not text")
        content = "".join(str(p.get("text", "")) for p in content)
    return {"role": ROLES[role], "content": content}


def turns(value: object, column: str) -> list[dict]:
    """A list of messages in `column`; a JSON string (as a CSV cell holds it) is parsed first."""
    value = parse_json_cell(value, column)
    if value is None:
        raise ValueError(f"missing field '{column}'")
    if not isinstance(value, list):
        raise ValueError(f"'{column}' must be a list of messages, got {type(value).__name__}")
    return [turn(message, f"message {n} in '{column}'") for n, message in enumerate(value, start=1)]


def transcript(text: object, column: str) -> list[dict]:
    """An HH-RLHF transcript ("\\n\\nHuman: …\\n\\nAssistant: …") as messages."""
    if not isinstance(text, str) or not TRANSCRIPT_MARKER.search(text):
        raise ValueError(f"'{column}' is not a transcript with Human: and Assistant: turns")
    parts = TRANSCRIPT_MARKER.split(text)
    if parts[0].strip():
        raise ValueError(f"'{column}' has text before its first Human: or Assistant: turn")
    speakers, contents = parts[1::2], parts[2::2]
    return [
        {"role": "user" if who == "Human" else "assistant", "content": said.strip()}
        for who, said in zip(speakers, contents, strict=True)
    ]


def looks_like_transcript(value: object) -> bool:
    """Whether a cell is HH-RLHF text rather than a plain answer or a list of messages."""
    return isinstance(value, str) and value.lstrip().startswith("Human:") and "\n\nAssistant:" in value


def split_shared(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], str, str]:
    """Two conversations that share everything before their last assistant turn → (prompt, chosen, rejected)."""
    for name, conversation in (("chosen", chosen), ("rejected", rejected)):
        if len(conversation) < 2 or conversation[-1]["role"] != "assistant":
            raise ValueError(f"'{name}' must be a conversation ending with the assistant's answer")
    if chosen[:-1] != rejected[:-1]:
        raise ValueError("chosen and rejected do not share the same conversation before the answer")
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def split_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    """TRL's standard implicit prompt: two texts whose common beginning (to a word boundary) is the prompt."""
    common = 0
    while common < min(len(chosen), len(rejected)) and chosen[common] == rejected[common]:
        common += 1
    # back to the last whitespace, so "is blue." / "is bright." split before the word, not inside it
    cut = common if common in (len(chosen), len(rejected)) else max(chosen.rfind(" ", 0, common) + 1, 0)
    prompt = chosen[:cut]
    if not prompt.strip():
        raise ValueError("chosen and rejected do not begin with a shared prompt")
    return prompt, chosen[cut:], rejected[cut:]


def text(row: dict, column: str) -> str:
    """A required, non-empty text field."""
    value = row.get(column)
    if value is None:  # absent, or a null cell in Parquet
        raise ValueError(f"missing field '{column}'")
    if not isinstance(value, str):
        raise ValueError(f"'{column}' must be text, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"'{column}' is empty")
    return value


def optional_text(row: dict, column: str) -> str:
    """An optional text field ("" when absent); names and categories without their outer spaces."""
    value = row.get(column)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"'{column}' must be text, got {type(value).__name__}")
    return value.strip() if column in ("category", "author") else value


def system_turn(row: dict) -> list[dict]:
    """The row's `system` field as a leading system turn, or nothing."""
    system = optional_text(row, "system")
    return [{"role": "system", "content": system}] if system.strip() else []


def tags(value: object) -> list[str]:
    """A list of tags, or one comma-separated string of them."""
    if value is None:
        return []
    value = parse_json_cell(value, "tags") if isinstance(value, str) and value.startswith("[") else value
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        raise ValueError(f"'tags' must be a list or comma-separated text, got {type(value).__name__}")
    return [str(tag).strip() for tag in value if str(tag).strip()]


def label(value: object, column: str) -> bool:
    """A good/bad label: a boolean, or its spelling in a CSV cell (true/false, 1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ValueError(f"'{column}' must be true or false, got {value!r}")
