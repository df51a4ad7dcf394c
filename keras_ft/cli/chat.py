"""`keras-ft chat`: chat with a preset (+ adapter) in the browser, or a terminal."""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import click

from keras_ft.cli import errors as cli_errors
from keras_ft.cli.flags import ADAPTER_HELP, config_file, config_options, overrides_from_flags
from keras_ft.config import SAMPLER_FIELDS
from keras_ft.serving.session import chat_config, load_chat
from keras_ft.serving.terminal import run_terminal

log = logging.getLogger(__name__)

GRADIO_MISSING = "The browser chat needs Gradio: pip install 'keras_ft[ui]'"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The Config fields `chat` and `serve` take: the model, its template, the sampler.
CHAT_FIELDS = ("preset", "template", *SAMPLER_FIELDS)
TEMPLATE_NOTE = {"template": "default: the template the adapter was trained with"}


def load_from_flags(adapter, config_path, flags):
    """flags -> the chat's Config (usage errors: exit 2) -> the loaded ChatModel."""
    overrides = overrides_from_flags(flags)
    with cli_errors.usage_errors():
        cfg = chat_config(adapter, config_path, overrides)
    return load_chat(cfg, adapter or None)


def warn_if_exposed(host: str, what: str) -> None:
    if host not in LOOPBACK:
        click.echo(
            f"Note: {what} on {host} is reachable from other machines, with no authentication.",
            err=True,
        )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--adapter", default=None, help=ADAPTER_HELP)
@config_file()
@config_options(*CHAT_FIELDS, notes=TEMPLATE_NOTE)
@click.option("--terminal", is_flag=True, help="Chat in this terminal instead of a browser.")
@click.option("--system", default="", help="A system prompt put before the conversation.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address the browser app binds to; another than loopback must be asked for.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True)
@click.option("--share", is_flag=True, help="Also open a public Gradio share link.")
@cli_errors.reported
def main(adapter, config_path, terminal, system, host, port, share, **flags):
    """Chat with a preset plus an optional LoRA adapter (a browser app, or --terminal).

    The conversation is rendered with the template the adapter was trained
    with (unless --template), and replies stream token by token. The browser
    app binds 127.0.0.1 unless --host says otherwise.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not terminal:
        try:
            from keras_ft.serving import web  # heavy: gradio
        except ImportError as e:
            if (e.name or "").split(".")[0] != "gradio":
                raise
            raise click.ClickException(GRADIO_MISSING) from None
    chat = load_from_flags(adapter, config_path, flags)
    if terminal:
        run_terminal(chat, system=system)
        return
    warn_if_exposed(host, "the chat")
    web.launch(web.build_app(chat, system), host=host, port=port, share=share)


if __name__ == "__main__":
    main()
