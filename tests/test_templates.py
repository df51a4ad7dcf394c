import pytest

from keras_ft.templates import Message, get_template, split_turns

CHAT = (
    Message("system", "Be brief."),
    Message("user", "Hi"),
    Message("assistant", "Hello!"),
    Message("user", "Steps?"),
    Message("assistant", "1. One."),
)


def _text(segments, trainable_only=False):
    return "".join(s.text for s in segments if s.trainable or not trainable_only)


def test_instruction_template_matches_keras_hub_guide():
    segments = get_template("instruction").render(
        [Message("user", "Boil an egg."), Message("assistant", "1. Boil water.")]
    )
    assert _text(segments) == "<bos>Instruction:\nBoil an egg.\n\nResponse:\n1. Boil water.<eos>"
    assert _text(segments, trainable_only=True) == "1. Boil water.<eos>"


def test_gemma_template_literal():
    segments = get_template("gemma").render(CHAT)
    assert _text(segments) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        "Hello!<end_of_turn>\n<start_of_turn>user\nSteps?<end_of_turn>\n"
        "<start_of_turn>model\n1. One.<end_of_turn>\n"
    )
    assert _text(segments, trainable_only=True) == "Hello!<end_of_turn>1. One.<end_of_turn>"


def test_llama3_template_literal():
    segments = get_template("llama3").render(CHAT[1:3])
    assert _text(segments) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    )


def test_prompt_rendering_ends_with_the_assistant_header():
    segments = get_template("gemma").render_prompt([Message("user", "Hi")])
    assert _text(segments) == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert not any(s.trainable for s in segments)


def test_custom_format_string():
    template = get_template("Q: {prompt}\nA: {response}")
    segments = template.render([Message("user", "2+2?"), Message("assistant", "4")])
    assert _text(segments) == "<bos>Q: 2+2?\nA: 4<eos>"
    assert _text(segments, trainable_only=True) == "4<eos>"


def test_bad_templates_are_refused():
    with pytest.raises(ValueError, match="Unknown template 'gemmma'"):
        get_template("gemmma")
    with pytest.raises(ValueError, match="comes after `{response}`"):
        get_template("{response} then {prompt}")


@pytest.mark.parametrize(
    "fmt, why",
    [
        ("Q: {question}\nA: {response}", "unknown field `{question}`"),
        ("Q: {}\nA: {response}", "unknown field `{}`"),
        ("Q: {prompt}\nA: {response} {response}", "`{response}` comes after `{response}`"),
        ("Answer: {response}", "no `{prompt}`, so the prompt would be dropped"),
        ("Q: {prompt}", "no `{response}`"),
        ("Q: {prompt!r}\nA: {response}", "no conversion or format spec"),
        ("Q: {prompt:>9}\nA: {response}", "no conversion or format spec"),
        ("Q: { {prompt}\nA: {response}", "not a valid format string"),
        ("Q: {prompt} }\nA: {response}", "not a valid format string"),
        ("{", "not a valid format string"),
        ("Q: prompt}", "not a valid format string"),
    ],
)
def test_bad_custom_formats_name_the_template_setting(fmt, why):
    with pytest.raises(ValueError) as caught:
        get_template(fmt)
    message = str(caught.value)
    assert why in message
    assert "custom `template`" in message and f"Received: template={fmt!r}" in message


def test_custom_format_braces_render_as_str_format_does():
    fmt = "{{system}} Q: {prompt} {{ }} ({prompt})\nA: {response}"
    template = get_template(fmt)
    segments = template.render([Message("user", "2+2?"), Message("assistant", "4")])
    head = fmt[: fmt.index("{response}")].format(prompt="2+2?")
    assert head == "{system} Q: 2+2? { } (2+2?)\nA: "
    assert _text(segments) == "<bos>" + head + "4<eos>"
    prompt = template.render_prompt([Message("system", "S"), Message("user", "U")])
    assert _text(prompt) == "<bos>" + fmt[: fmt.index("{response}")].format(prompt="S\n\nU")


def test_split_turns_groups_system_with_first_user():
    turns = split_turns(CHAT)
    assert [len(p) for p, _ in turns] == [2, 1]
    assert [r for _, r in turns] == ["Hello!", "1. One."]


def test_a_plain_function_template_has_no_jinja_form():
    from keras_ft.templates import Segment, Template

    template = Template("mine", lambda prompt, reply: [Segment("x")])
    with pytest.raises(ValueError, match="'mine' has no Jinja form"):
        template.chat_template()
