import pytest

from keras_ft.evaluation.metrics_text import (
    check_steps,
    exact_match,
    label_scores,
    lcs_length,
    length_stats,
    normalize_text,
    rouge_l,
    steps_summary,
    word_tokens,
)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("ABCBDAB", "BDCABA", 4),  # CLRS: BCBA
        ("", "abc", 0),
        ("abc", "abc", 3),
        ("abc", "def", 0),
        ("axbycz", "abc", 3),
    ],
)
def test_lcs_length_by_hand(a, b, expected):
    assert lcs_length(a, b) == expected == lcs_length(b, a)


@pytest.mark.parametrize(
    "prediction, reference, p, r",
    [
        # Lin (2004), section 3.1: S1 is the reference.
        ("police kill the gunman", "police killed the gunman", 3 / 4, 3 / 4),
        ("the gunman kill police", "police killed the gunman", 2 / 4, 2 / 4),
        # LCS "the cat on the mat" = 5 of 6 words on both sides.
        ("the cat is on the mat", "the cat sat on the mat", 5 / 6, 5 / 6),
        # LCS "a c e" = 3: precision 3/5, recall 3/3.
        ("a b c d e", "a c e", 3 / 5, 1.0),
        ("completely different", "nothing shared here", 0.0, 0.0),
    ],
)
def test_rouge_l_against_hand_computed_values(prediction, reference, p, r):
    scores = rouge_l(prediction, reference)
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    assert scores == pytest.approx({"precision": p, "recall": r, "f1": f1})


def test_rouge_l_ignores_case_and_punctuation_and_handles_empty():
    assert rouge_l("Hello, World!", "hello world")["f1"] == 1.0
    assert rouge_l("", "")["f1"] == 1.0
    assert rouge_l("", "something")["f1"] == 0.0
    assert word_tokens("It's 3:45_pm, OK?") == ["it", "s", "3", "45", "pm", "ok"]


def test_exact_match_normalizes_space_case_and_a_final_period():
    assert exact_match("  Paris.\n", "paris")
    assert exact_match("New   York", "new york")
    assert not exact_match("Paris is", "Paris")
    assert normalize_text("ＡＢＣ  x.") == "abc x"  # NFKC folds full-width letters


@pytest.mark.parametrize(
    "text, ok, preamble, ordered, items",
    [
        ("1. Open the app.\n2. Tap Settings.\n3. Save.", True, False, True, 3),
        ("1. Open the app.\n   It is blue.\n2. Tap Settings.\n\nDone!", True, False, True, 2),
        ("Sure! Here's how:\n1. Open the app.\n2. Save.", False, True, True, 2),
        ("1. Open the app.\n3. Save.", False, False, False, 2),
        ("2. Open.\n1. Save.", False, True, False, 2),
        ("1. Only one step.", False, False, False, 1),
        ("Just prose, no list.", False, True, False, 0),
        ("", False, False, False, 0),
    ],
)
def test_check_steps(text, ok, preamble, ordered, items):
    assert check_steps(text) == {
        "ok": ok,
        "preamble": preamble,
        "ordered": ordered,
        "num_items": items,
    }


def test_steps_summary_rates():
    summary = steps_summary(["1. a\n2. b", "Hi\n1. a\n2. b", "no"])
    assert summary["adherence"] == pytest.approx(1 / 3)
    assert summary["ordered_list"] == pytest.approx(2 / 3)
    assert summary["preamble"] == pytest.approx(2 / 3)


def test_label_scores_accuracy_validity_and_confusions():
    labels = ["POLITICS", "SPORTS", "WORLD NEWS"]
    references = ["POLITICS", "POLITICS", "SPORTS", "WORLD NEWS"]
    predictions = ["politics", "SPORTS", "SPORTS.", "The world news"]
    scores = label_scores(predictions, references, labels, top=2)
    assert scores["accuracy"] == 0.5 and scores["valid"] == 0.75
    assert scores["confusions"] == [["POLITICS", "SPORTS", 1], ["WORLD NEWS", "(invalid)", 1]]
    assert scores["per_label"]["POLITICS"] == {"support": 2, "recall": 0.5, "precision": 1.0}
    matrix = scores["matrix"]
    assert matrix["labels"] == ["POLITICS", "SPORTS", "(other)", "(invalid)"]
    assert matrix["counts"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]


def test_length_stats():
    stats = length_stats([1, 2, 3, 4, 10])
    assert stats["mean"] == 4 and stats["median"] == 3 and stats["max"] == 10
    assert length_stats([])["mean"] == 0.0
