from keras_ft.templates import Message, get_template, split_turns

CHAT = (Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello!"),
        Message("user", "Steps?"), Message("assistant", "1. One."))


def _text(segments, trainable_only=False):
    return "".join(s.text for s in segments if s.trainable or not trainable_only)


def test_instruction_template_matches_keras_hub_guide():
    segments = get_template("instruction").render(
        [Message("user", "Boil an egg."), Message("assistant", "1. Boil water.")])
    assert _text(segments) == "<bos>Instruction:\nBoil an egg.\n\nResponse:\n1. Boil water.<eos>"
    assert _text(segments, trainable_only=True) == "1. Boil water.<eos>"


def test_gemma_template_literal():
    segments = get_template("gemma").render(CHAT)
    assert _text(segments) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        "Hello!<end_of_turn>\n<start_of_turn>user\nSteps?<end_of_turn>\n"
        "<start_of_turn>model\n1. One.<end_of_turn>\n")
    assert _text(segments, trainable_only=True) == "Hello!<end_of_turn>1. One.<end_of_turn>"


def test_llama3_template_literal():
    segments = get_template("llama3").render(CHAT[1:3])
    assert _text(segments) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>")


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
    import pytest

    with pytest.raises(ValueError, match="Unknown template 'gemmma'"):
        get_template("gemmma")
    with pytest.raises(ValueError, match="end with one"):
        get_template("{response} then {prompt}")


def test_split_turns_groups_system_with_first_user():
    turns = split_turns(CHAT)
    assert [len(p) for p, _ in turns] == [2, 1]
    assert [r for _, r in turns] == ["Hello!", "1. One."]
