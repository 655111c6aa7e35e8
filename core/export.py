"""A session's branch as Markdown (to read) or JSON (for scripts). Never includes a key or other settings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

from core.models import Message, Role, Session, Status

_STATUS_NOTE = {
    Status.INTERRUPTED: "*(interrupted — partial reply)*",
    Status.STREAMING: "*(still streaming)*",
}


def to_markdown(session: Session, messages: Sequence[Message]) -> str:
    lines = [f"# {session.display_title}", "", f"*Session {session.id}, started {session.created_at}*", ""]
    for message in messages:
        who = "You" if message.role is Role.USER else f"Assistant ({message.model})" if message.model else "Assistant"
        lines += [f"## {who}", "", message.content.rstrip(), ""]
        if message.status is Status.ERROR:
            lines += [f"> **Error:** {message.error}", ""]
        elif message.status in _STATUS_NOTE:
            lines += [_STATUS_NOTE[message.status], ""]
    return "\n".join(lines).rstrip() + "\n"


def to_json(session: Session, messages: Sequence[Message]) -> str:
    return json.dumps(
        {"session": asdict(session), "messages": [asdict(m) for m in messages]}, ensure_ascii=False, indent=2
    )
