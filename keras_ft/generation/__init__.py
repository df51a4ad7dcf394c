"""Generation: prompts rendered with a template -> sampled replies.

`generate` (the module) renders and encodes prompts, pads, runs the compiled
loop of `decode` and cuts replies at the template's end of turn.
"""
