"""`keras-ft serve`: an OpenAI-style chat completions API on a local port."""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import click

from keras_ft.cli import errors as cli_errors
from keras_ft.cli.chat import CHAT_FIELDS, TEMPLATE_NOTE, load_from_flags, warn_if_exposed
from keras_ft.cli.flags import ADAPTER_HELP, config_file, config_options
from keras_ft.serving.http_api import make_server

log = logging.getLogger(__name__)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--adapter", default=None, help=ADAPTER_HELP)
@config_file()
@config_options(*CHAT_FIELDS, notes=TEMPLATE_NOTE)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; another than loopback must be asked for.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@cli_errors.reported
def main(adapter, config_path, host, port, **flags):
    """Serve POST /v1/chat/completions and GET /v1/models (OpenAI-style).

    The sampler flags are each request's defaults; a request's temperature
    (0: greedy), top_p, max_tokens, seed and repetition_penalty override
    them. One request is answered at a time; the others wait.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    chat = load_from_flags(adapter, config_path, flags)
    warn_if_exposed(host, "the API")
    try:
        server = make_server(chat, host, port)
    except OSError as e:
        raise click.ClickException(f"Cannot listen on {host}:{port}: {e.strerror or e}") from None
    click.echo(
        f"Serving {chat.name} at {server.url}/v1 (POST /v1/chat/completions, "
        "GET /v1/models; one request at a time). Ctrl-C stops.",
        err=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
