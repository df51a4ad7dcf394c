"""Chatting with a preset (+ adapter): in a browser, a terminal, or over HTTP.

`session` holds the model and one conversation (its history rendered with
the template the adapter was trained with, streamed replies, the context
check); `web` is the Gradio app of `keras-ft chat`, `terminal` its
`--terminal` loop, and `http` the OpenAI-style API of `keras-ft serve`.
"""
