"""Incremental detokenization and stop strings, with the real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from prism.engine.detokenizer import OutputText

TEXT = "Voilà: naïve café ☕ — 42 robots said “hello”. 日本語も大丈夫。 Done."


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer):
    return smollm2_tokenizer


def stream(tokenizer, text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], str | None]:
    prompt = tokenizer.encode("Say something:")
    output = OutputText(tokenizer, prompt, stop)
    deltas: list[str] = []
    for token in tokenizer.encode(text):
        matched = output.push(token)
        deltas.append(output.take_delta(finished=matched is not None))
        if matched is not None:
            return deltas, matched
    deltas.append(output.take_delta(finished=True))
    return deltas, None


@pytest.mark.slow
def test_deltas_add_up_to_the_full_decode(tokenizer) -> None:
    deltas, matched = stream(tokenizer, TEXT)
    assert matched is None
    assert "".join(deltas) == tokenizer.decode(tokenizer.encode(TEXT))
    assert all("\ufffd" not in delta for delta in deltas)


@pytest.mark.slow
def test_stop_string_cuts_the_text_and_is_never_streamed(tokenizer) -> None:
    deltas, matched = stream(tokenizer, TEXT, stop=("robots said",))
    assert matched == "robots said"
    assert "".join(deltas) == "Voilà: naïve café ☕ — 42 "
    assert not any("rob" in delta for delta in deltas)


@pytest.mark.slow
def test_the_earliest_stop_in_the_text_wins_whatever_the_list_order(tokenizer) -> None:
    # " robots" is one token: both stop strings complete in the same step.
    deltas, matched = stream(tokenizer, TEXT, stop=("bots", "robo"))
    assert matched == "robo"
    assert "".join(deltas) == "Voilà: naïve café ☕ — 42 "


@pytest.mark.slow
def test_held_back_text_is_released_when_no_stop_matches(tokenizer) -> None:
    deltas, matched = stream(tokenizer, "the robot walked", stop=("robots",))
    assert matched is None
    assert "".join(deltas) == "the robot walked"
