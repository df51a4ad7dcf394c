"""`keras-ft <command>` and `python -m keras_ft <command>`: one click group.

Each command lives in `keras_ft/cli/<command>.py` and does flags -> Config ->
one library call. Nothing outside this wing imports click.
"""

import click

from keras_ft.cli import (
    chat,
    compare,
    convert,
    data,
    evaluate,
    export,
    generate,
    plan,
    run,
    serve,
    upload,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Fine-tune, evaluate, compare, convert and export causal LMs with LoRA."""


main.add_command(run.main, "run")
main.add_command(evaluate.main, "evaluate")
main.add_command(generate.main, "generate")
main.add_command(compare.main, "compare")
main.add_command(data.main, "data")
main.add_command(convert.main, "convert")
main.add_command(export.main, "export")
main.add_command(plan.main, "plan")
main.add_command(chat.main, "chat")
main.add_command(serve.main, "serve")
main.add_command(upload.main, "upload")
