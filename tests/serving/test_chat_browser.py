"""`keras-ft chat`'s browser app end to end: Gradio on a loopback port, driven
by Chromium through Playwright. Two turns (the second sent with the first's
history), Stop during a long reply, a conversation too long for the context
said in the page; a screenshot is kept (and copied to $KERAS_FT_ARTEFACTS)."""

import os
import re
import shutil
import socket
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from keras_ft.generation.generate import generate_function, generate_replies
from keras_ft.serving import web
from keras_ft.serving.session import ChatModel
from keras_ft.templates import Message

CONTEXT = 4096  # room for a long reply to stop
LONG_REPLY = 3000  # max new tokens of the reply stopped early
TIMEOUT_MS = 120_000  # generous: CI shares 2 cores between two test workers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser_chat(chat_model):
    """The adapter's chat (its model, template and greedy settings), with room
    for a long reply."""
    return ChatModel(
        chat_model.causal_lm,
        chat_model.cfg,
        tokenizer=chat_model.tokenizer,
        context_length=CONTEXT,
        name="tiny-chat",
    )


@pytest.fixture(scope="module")
def app_url(browser_chat):
    port = free_port()
    app = web.build_app(browser_chat)
    web.launch(app, "127.0.0.1", port, share=False, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def page(app_url):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox", "--headless=new"],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 1100})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app_url)
        yield page
        browser.close()


def send(page, text: str) -> None:
    box = page.locator("#message textarea")
    box.fill(text)
    box.press("Enter")


def bot_messages(page):
    return page.locator('#chat [data-testid="bot"]')


def wait_done(page):
    """The status line once a reply (or a refusal) is written."""
    status = page.locator("#status")
    expect(status).to_have_text(re.compile(r"token|Not sent|failed"), timeout=TIMEOUT_MS)
    return status.inner_text()


def shown(locator) -> str:
    """A chat message's text as Gradio labels it (its raw text, before Markdown)."""
    label = locator.get_attribute("aria-label")
    return label.split("message: ", 1)[1]


def set_number(box, value: int) -> None:
    """Types `value` into a Gradio number box and leaves it (Gradio reads it on blur).

    CI once saw the old value stay for 5 s after `fill` (likely the
    accordion's first opening mounting the box again with its old value), so
    the fill is repeated until the page shows the new value; the request's
    settings are asserted afterwards, so a value the page shows but Gradio did
    not take still fails the test.
    """
    expect(box).to_be_visible()
    for _ in range(5):
        box.fill(str(value))
        box.press("Tab")
        try:
            expect(box).to_have_value(str(value), timeout=3000)
            break
        except AssertionError:
            continue
    expect(box).to_have_value(str(value))
    box.page.wait_for_timeout(1000)  # Gradio takes the new value in on blur, asynchronously


def test_two_turns_stop_and_the_context_in_a_browser(page, browser_chat, tmp_path):
    send(page, "How do I boil an egg?")
    expect(bot_messages(page)).to_have_count(1)
    wait_done(page)
    first = browser_chat.last
    assert first.messages == (Message("user", "How do I boil an egg?"),)
    assert first.text and shown(bot_messages(page).nth(0)) == first.text

    send(page, "And then?")
    expect(bot_messages(page)).to_have_count(2)  # with "Generating...": the old status is gone
    wait_done(page)
    second = browser_chat.last
    assert second is not first
    assert second.messages == (
        Message("user", "How do I boil an egg?"),
        Message("assistant", first.text),
        Message("user", "And then?"),
    )  # the second request carried the first turn
    expect(bot_messages(page).nth(1)).to_have_attribute(
        "aria-label", f"bot's message: {second.text}"
    )

    # A long reply, stopped: greedy, this prompt's reply runs to max new tokens
    # without an end of turn (checked with the batch loop first).
    prompt = "Write a haiku about autumn."
    messages = list(second.messages) + [Message("assistant", second.text), Message("user", prompt)]
    cfg = browser_chat.settings(max_new_tokens=LONG_REPLY)
    batch = generate_replies(
        generate_function(browser_chat.causal_lm, cfg),
        [browser_chat.encode(messages)],
        browser_chat.template,
        browser_chat.tokenizer,
        LONG_REPLY,
    )[0]
    assert not batch["stopped"], "pick a prompt whose greedy reply does not end early"
    page.get_by_text("Sampler settings", exact=True).click()
    set_number(page.locator("#max_new_tokens input"), LONG_REPLY)
    send(page, prompt)
    expect(bot_messages(page)).to_have_count(3)
    expect(page.locator("#status")).to_have_text("Generating...")
    expect(bot_messages(page).nth(2)).not_to_have_attribute("aria-label", "bot's message: ")
    page.locator("#stop").click()
    status = wait_done(page)
    stopped = browser_chat.last
    assert stopped.cfg.max_new_tokens == LONG_REPLY
    assert stopped.stopped and 0 < stopped.completion_tokens < LONG_REPLY
    assert (
        status
        == f"Stopped after {stopped.completion_tokens} token{'s' * (stopped.completion_tokens != 1)}."
    )

    # Past the context: said in the page, the text kept to edit, nothing sent.
    send(page, "fox " * CONTEXT)
    expect(page.locator("#status")).to_have_text(re.compile(r"^\s*Not sent"))
    status = page.locator("#status").inner_text().strip()
    assert status.startswith("Not sent:") and f"context is {CONTEXT} tokens" in status
    assert browser_chat.last is stopped
    expect(bot_messages(page)).to_have_count(3)

    shot = tmp_path / "chat.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    if os.environ.get("KERAS_FT_ARTEFACTS"):
        target = Path(os.environ["KERAS_FT_ARTEFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / "chat_browser.png")
