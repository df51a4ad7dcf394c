"""Generation: prompts rendered with a template -> sampled replies.

`generate` (the module) renders and encodes prompts, pads, runs the compiled
loop of `decode` and cuts replies at the template's end of turn. `stream`
yields one reply's text as it is sampled (the same loop, a token at a time),
for a chat or a server. `decode.penalize_logits` is the repetition penalty
and no-repeat n-gram ban both paths apply (`Config.repetition_penalty`,
`Config.no_repeat_ngram_size`).
"""
