"""One way for every command line to report a known error: a message, no traceback.

    @click.command()
    @click.option(...)
    @cli_errors.reported
    def main(...): ...

`reported` runs the command and turns keras_ft's known error types (bad
input, a missing or corrupt file, a preset that cannot be reached, an adapter
that does not fit the model) into a `click.ClickException`: exit status 1 and
one paragraph on stderr. Click's own usage errors (exit 2) pass through, and so
does anything else: an unexpected exception is a bug, and its traceback is
what to report. `usage_errors()` marks a block (the flags and the experiment
YAML turned into a Config) whose ValueErrors are usage errors (exit 2).
"""

from __future__ import annotations

import contextlib
import functools
import sys

import click

# keras_ft modules whose error types are not ValueErrors; looked up only when
# already imported (an error of a module that was never imported cannot occur).
_OTHER_ERRORS = (
    ("keras_ft.model.presets", "PresetUnavailableError"),
    ("keras_ft.gguf.embedded", "EmbeddedModelChangedError"),
)


def known_errors() -> tuple[type[BaseException], ...]:
    """The exception types a command reports as a message.

    ValueError covers keras_ft's own (a Config value, DataError, RunDirError,
    CheckpointError, TokenCacheError, UnsupportedModelError, NonFiniteLossError,
    model.AdapterMismatchError, model.CorruptFileError);
    NotImplementedError what an export cannot express; OSError a file that is
    missing, unreadable or cannot be written.
    """
    found = [ValueError, NotImplementedError, OSError]
    for module, name in _OTHER_ERRORS:
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, name):
            found.append(getattr(loaded, name))
    return tuple(found)


def message(error: BaseException) -> str:
    """The one-paragraph text for `error`.

    An OSError reads "<strerror>: <file>" (Python's own str() adds
    "[Errno 2]"); others their str(), or the type name when that is empty.
    """
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename is not None else ""
        other = f" -> {error.filename2}" if error.filename2 is not None else ""
        return f"{error.strerror}{where}{other}"
    return str(error).strip() or type(error).__name__


def to_click(error: BaseException) -> click.ClickException:
    """`error` as a ClickException (exit status 1)."""
    return click.ClickException(message(error))


def reported(command):
    """Decorates a click command's function: known errors become messages."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as e:
            if isinstance(e, known_errors()):
                raise to_click(e) from None
            raise

    return run


@contextlib.contextmanager
def usage_errors():
    """ValueErrors raised in the block become `click.UsageError` (exit 2):
    a flag or experiment-YAML value that does not validate."""
    try:
        yield
    except click.ClickException:
        raise
    except ValueError as e:
        raise click.UsageError(message(e)) from None
