"""`keras-ft chat --terminal`: the loop over replaced stdin/stdout, and the
command in-process (the adapter's template, Gradio missing)."""

import io
import sys

from click.testing import CliRunner

import keras_ft.serving
from keras_ft.cli import main
from keras_ft.cli.chat import GRADIO_MISSING
from keras_ft.serving.session import Conversation
from keras_ft.serving.terminal import PROMPT, run_terminal
from keras_ft.templates import Message


def chat_over(chat_model, lines, **kwargs):
    stdout = io.StringIO()
    conversation = run_terminal(chat_model, stdin=io.StringIO(lines), stdout=stdout, **kwargs)
    return conversation, stdout.getvalue()


def test_the_terminal_streams_replies_with_the_history(chat_model):
    conversation, out = chat_over(chat_model, "How do I boil an egg?\n\nAnd then?\n")
    first, second = conversation.history[1].content, conversation.history[3].content
    assert [m.role for m in conversation.history] == ["user", "assistant"] * 2
    assert chat_model.last.messages == (
        Message("user", "How do I boil an egg?"),
        Message("assistant", first),
        Message("user", "And then?"),
    )
    assert "template gemma" in out.splitlines()[0]
    # Each reply printed as it came, after its prompt; the end of input leaves.
    replies = out.split(PROMPT)[1:]
    assert [r.strip() for r in replies] == [first, "", second, ""]  # an empty line: skipped


def test_reset_forgets_the_turns_and_quit_leaves(chat_model):
    conversation, out = chat_over(chat_model, "Hi\n/reset\nHello\n/quit\nNever read\n")
    assert "(history cleared)" in out
    assert chat_model.last.messages == (Message("user", "Hello"),)
    assert [m.content for m in conversation.history][0] == "Hello"
    assert len(conversation.history) == 2 and "Never read" not in out


def test_a_conversation_past_the_context_is_said_and_the_chat_goes_on(chat_model):
    long = "The quick brown fox jumps over the lazy dog. " * 20
    conversation, out = chat_over(chat_model, f"{long}\n/help\nHi\n", system="Be brief.")
    assert "[not sent]" in out and "context is 160 tokens" in out
    assert "Unknown command /help" in out
    assert conversation.messages()[:2] == [Message("system", "Be brief."), Message("user", "Hi")]


def test_the_command_chats_with_the_adapter_in_a_terminal(chat_model, adapter_run):
    args = ["chat", "--terminal", "--adapter", str(adapter_run), "--sampler", "greedy"]
    result = CliRunner().invoke(main, [*args, "--max-new-tokens", "4"], input="Hello\n/quit\n")
    assert result.exit_code == 0, result.output
    expected = "".join(
        Conversation(chat_model).send("Hello", chat_model.settings(max_new_tokens=4))
    )
    assert "template gemma" in result.output  # the adapter's, not Config's default
    assert f"{PROMPT}{expected}\n{PROMPT}" in result.output


def test_without_gradio_the_browser_chat_says_how_to_install_it(monkeypatch, adapter_run):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` fails
    monkeypatch.delitem(sys.modules, "keras_ft.serving.web", raising=False)
    monkeypatch.delattr(keras_ft.serving, "web", raising=False)
    result = CliRunner().invoke(main, ["chat", "--adapter", str(adapter_run)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {GRADIO_MISSING}"
