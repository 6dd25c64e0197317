"""lite.engine.tokenizer and lite.engine.stop on SmolLM2's real tokenizer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lite.engine.stop import StopChecker, find_stop, partial_stop_length
from lite.engine.tokenizer import IncrementalDetokenizer, Tokenizer

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]
MIXED_SCRIPT_TEXT = "Hello 世界! 🤖🎉 naïve café 日本語のテキスト"


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir) -> Tokenizer:
    return Tokenizer(smollm2_dir)


def copy_folder(tmp_path: Path, source: Path, *, without: tuple[str, ...] = ()) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for file in source.iterdir():
        if file.name not in without:
            (folder / file.name).symlink_to(file)
    return folder


def stream(detokenizer: IncrementalDetokenizer, token_ids: list[int]) -> list[str]:
    return [detokenizer.feed(token_id) for token_id in token_ids]


# ---------------------------------------------------------------------------------------- Tokenizer

def test_encode_then_decode_returns_the_text(tokenizer):
    assert tokenizer.decode(tokenizer.encode(MIXED_SCRIPT_TEXT)) == MIXED_SCRIPT_TEXT


def test_decode_skips_special_tokens_unless_asked(tokenizer):
    ids = tokenizer.encode("<|im_start|>hi<|im_end|>")
    assert tokenizer.decode(ids) == "hi"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<|im_start|>hi<|im_end|>"


def test_chat_template_ids_match_transformers(tokenizer, smollm2_dir):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(smollm2_dir)
    expected = reference.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"]
    assert tokenizer.apply_chat_template(MESSAGES) == expected
    assert tokenizer.decode(expected, skip_special_tokens=False).endswith("<|im_start|>assistant\n")


def test_chat_template_without_generation_prompt_ends_at_last_message(tokenizer):
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=False)
    assert tokenizer.decode(ids, skip_special_tokens=False).endswith("What is 2+2?<|im_end|>\n")


def test_chat_template_passes_tools_to_the_template(smollm2_dir):
    template = "{% for tool in tools %}[{{ tool.function.name }}]{% endfor %}{{ messages[0].content }}"
    tokenizer = Tokenizer(smollm2_dir, chat_template=template)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    assert tokenizer.decode(tokenizer.apply_chat_template(MESSAGES, tools=tools)) == "[get_weather]What is 2+2?"


def test_chat_template_override_replaces_the_models(smollm2_dir):
    tokenizer = Tokenizer(smollm2_dir, chat_template="{% for m in messages %}<<{{ m.content }}>>{% endfor %}")
    assert tokenizer.decode(tokenizer.apply_chat_template(MESSAGES)) == "<<What is 2+2?>>"


def test_chat_template_override_may_be_a_file(smollm2_dir, tmp_path):
    template_file = tmp_path / "template.jinja"
    template_file.write_text("{% for m in messages %}{{ m.role }}: {{ m.content }}{% endfor %}")
    tokenizer = Tokenizer(smollm2_dir, chat_template=str(template_file))
    assert tokenizer.decode(tokenizer.apply_chat_template(MESSAGES)) == "user: What is 2+2?"


def test_model_without_chat_template_error_names_the_flag(smollm2_dir, tmp_path):
    tokenizer = Tokenizer(copy_folder(tmp_path, smollm2_dir, without=("chat_template.jinja",)))
    with pytest.raises(ValueError, match="--chat-template"):
        tokenizer.apply_chat_template(MESSAGES)


def test_eos_token_ids_unite_tokenizer_and_generation_config(smollm2_dir, tmp_path):
    folder = copy_folder(tmp_path, smollm2_dir, without=("generation_config.json",))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    assert Tokenizer(folder).eos_token_ids == (2, 0)


def test_vocab_size_counts_every_token(tokenizer):
    assert tokenizer.vocab_size == 49152


# ---------------------------------------------------------------------------------------- detokenizer

def test_incremental_detokenizer_output_adds_up_to_the_full_decode(tokenizer):
    token_ids = tokenizer.encode("The quick brown fox jumps over the lazy dog.\n\tIndented   spaces!")
    assert "".join(stream(IncrementalDetokenizer(tokenizer), token_ids)) == tokenizer.decode(token_ids)


def test_incremental_detokenizer_never_emits_partial_utf8(tokenizer):
    token_ids = tokenizer.encode(MIXED_SCRIPT_TEXT)
    # The case under test: single tokens that are only part of a character's UTF-8 bytes.
    assert any("\ufffd" in tokenizer.decode([token_id]) for token_id in token_ids)
    chunks = stream(IncrementalDetokenizer(tokenizer), token_ids)
    assert not any("\ufffd" in chunk for chunk in chunks)
    assert "".join(chunks) == MIXED_SCRIPT_TEXT


def test_incremental_detokenizer_decodes_a_bounded_window_per_token(tokenizer, monkeypatch):
    decoded_lengths = []
    decode = tokenizer.decode

    def counting_decode(token_ids, skip_special_tokens=True):
        decoded_lengths.append(len(token_ids))
        return decode(token_ids, skip_special_tokens)

    token_ids = tokenizer.encode(MIXED_SCRIPT_TEXT * 20)
    monkeypatch.setattr(tokenizer, "decode", counting_decode)
    stream(IncrementalDetokenizer(tokenizer), token_ids)
    assert len(token_ids) > 300 and max(decoded_lengths) <= 8


def test_incremental_detokenizer_skips_special_tokens(tokenizer):
    token_ids = tokenizer.encode("Hi<|im_end|> there")
    assert "".join(stream(IncrementalDetokenizer(tokenizer), token_ids)) == "Hi there"


def test_incremental_detokenizer_continues_the_prompt_text(tokenizer):
    prompt_ids = tokenizer.encode("Once upon a")
    output_ids = tokenizer.encode("Once upon a time, there was")[len(prompt_ids):]
    chunks = stream(IncrementalDetokenizer(tokenizer, prompt_token_ids=prompt_ids), output_ids)
    assert "".join(chunks) == " time, there was"


# ---------------------------------------------------------------------------------------- stop strings

def test_stop_string_cuts_output_exactly():
    checker = StopChecker(["\nUser:"])
    assert checker.feed("The answer is 4.\nUser: and 3+3?") == "The answer is 4."
    assert checker.is_stopped and checker.matched_stop == "\nUser:"
    assert checker.text == "The answer is 4."


def test_earliest_stop_string_wins_over_list_order():
    assert find_stop("one STOP two END", ["END", "STOP"]) == (4, "STOP")
    checker = StopChecker(["END", "STOP"])
    assert checker.feed("one STOP two END") == "one "


def test_stream_holds_back_partial_stop_string():
    checker = StopChecker(["</answer>"])
    assert checker.feed("42 </") == "42 "
    assert checker.feed("ans") == ""
    assert checker.feed("wer> trailing") == ""
    assert checker.is_stopped and checker.text == "42 "


def test_stream_releases_held_text_that_stops_matching():
    checker = StopChecker(["</answer>"])
    assert checker.feed("a </") == "a "
    assert checker.feed("b> c") == "</b> c"
    assert not checker.is_stopped


def test_flush_releases_the_held_tail_when_the_sequence_ends():
    checker = StopChecker(["###"])
    assert checker.feed("done ##") == "done "
    assert checker.flush() == "##"
    assert checker.flush() == ""


def test_nothing_is_streamed_after_a_stop():
    checker = StopChecker(["."])
    assert checker.feed("Hi. more") == "Hi"
    assert checker.feed(" even more") == "" and checker.flush() == ""


def test_partial_stop_length_finds_the_longest_matching_tail():
    assert partial_stop_length("xx abab", ["ababc"]) == 4
    assert partial_stop_length("xx ab", ["zz"]) == 0


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="ab\n:", max_size=30), stops=st.lists(st.text(alphabet="ab\n:", min_size=1, max_size=4),
       min_size=1, max_size=3), cuts=st.lists(st.integers(0, 30), max_size=8))
def test_streamed_text_is_cut_before_the_earliest_stop_once_one_completes_for_any_chunking(text, stops, cuts):
    # Generation ends as soon as a stop string is complete, so the cut is decided then: before the
    # earliest stop string in the text so far (a longer one that began earlier but has not
    # completed by then never will: no more text comes).
    bounds = [0, *sorted(cut for cut in cuts if cut <= len(text)), len(text)]
    matches = (find_stop(text[:end], stops) for end in bounds[1:])
    match = next((m for m in matches if m is not None), None)
    expected = text if match is None else text[:match[0]]
    checker = StopChecker(stops)
    streamed = ""
    for start, end in zip(bounds, bounds[1:]):
        streamed += checker.feed(text[start:end])
        assert expected.startswith(streamed)  # the client never sees text past the cut
    assert streamed + checker.flush() == expected
    assert find_stop(expected, stops) is None


def test_a_stop_completing_inside_a_longer_one_that_began_earlier_cuts_at_the_completed_one():
    checker = StopChecker([":", "a::"])
    assert checker.feed("a:") == "a" and checker.is_stopped and checker.matched_stop == ":"


def test_stop_string_spanning_tokens_is_cut_from_a_detokenized_stream(tokenizer):
    detokenizer, checker = IncrementalDetokenizer(tokenizer), StopChecker(["\nUser:"])
    streamed = ""
    for token_id in tokenizer.encode("Sure! The answer is 42.\nUser: what next?"):
        streamed += checker.feed(detokenizer.feed(token_id))
    assert streamed == "Sure! The answer is 42." and checker.is_stopped
