"""`keras-ft chat --terminal`: the chat in a terminal, replies printed as they come.

One `Conversation` (the same history, template and sampler settings as the
browser's); `/reset` forgets the turns, `/quit` (or end of input) leaves.
Ctrl-C during a reply stops it (the turn keeps what came); at the prompt it
leaves.
"""

from __future__ import annotations

import sys
from typing import TextIO

from keras_ft.config import Config
from keras_ft.serving.session import ChatModel, Conversation

PROMPT = "> "
HELP = "/reset clears the history, /quit (or Ctrl-D) leaves; Ctrl-C stops a reply."


def run_terminal(
    chat: ChatModel,
    cfg: Config | None = None,
    system: str = "",
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> Conversation:
    """Chats over `stdin`/`stdout` (the process's by default) until /quit or EOF.

    Returns:
        The conversation, as it stood at the end.
    """
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    conversation = Conversation(chat, system)

    def say(text: str = "", end: str = "\n") -> None:
        stdout.write(text + end)
        stdout.flush()

    say(f"Chatting with {chat.name} (template {chat.cfg.template}). {HELP}")
    while True:
        say(PROMPT, end="")
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            say()
            break
        if not line:  # end of input
            say()
            break
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            break
        if text == "/reset":
            conversation.reset()
            say("(history cleared)")
            continue
        if text.startswith("/") and " " not in text:
            say(f"Unknown command {text}. {HELP}")
            continue
        try:
            pieces = conversation.send(text, cfg)
        except ValueError as e:  # e.g. the conversation outgrew the context
            say(f"[not sent] {e} (/reset starts over)")
            continue
        try:
            for piece in pieces:
                say(piece, end="")
        except KeyboardInterrupt:
            pieces.close()  # the turn keeps what came
            say(" [stopped]", end="")
        except Exception as e:  # noqa: BLE001 - said; the chat goes on
            say(f"\n[generation failed] {type(e).__name__}: {e}", end="")
        say()
    return conversation
