"""The chat as Gradio holds it -> OpenAI messages, and back for Regenerate."""
import base64

from lite.web.history import has_images, to_openai_messages, user_message, without_last_answer

PNG_BYTES = b"\x89PNG\r\n\x1a\nfake"


def test_text_messages_in_every_form_gradio_returns_become_plain_strings():
    history = [{"role": "user", "content": "Hi"},
               {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
               {"role": "user", "content": [{"type": "text", "text": "Line one"}, {"type": "text", "text": "two"}]}]
    assert to_openai_messages(history) == [{"role": "user", "content": "Hi"},
                                           {"role": "assistant", "content": "Hello!"},
                                           {"role": "user", "content": "Line one\ntwo"}]


def test_a_system_prompt_goes_first_and_a_blank_one_nowhere():
    history = [{"role": "user", "content": "Hi"}]
    assert to_openai_messages(history, "  Be brief. ")[0] == {"role": "system", "content": "Be brief."}
    assert to_openai_messages(history, "   ") == [{"role": "user", "content": "Hi"}]


def test_images_become_data_url_parts_before_the_text(tmp_path):
    image = tmp_path / "cat.png"
    image.write_bytes(PNG_BYTES)
    typed = user_message("What is this?", [str(image)])
    assert typed == {"role": "user", "content": [{"path": str(image)}, "What is this?"]}
    as_gradio_returns_it = {"role": "user", "content": [
        {"type": "file", "file": {"path": str(image), "mime_type": "image/png"}},
        {"type": "text", "text": "What is this?"}]}
    expected_url = "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()
    for message in (typed, as_gradio_returns_it):
        messages = to_openai_messages([message])
        assert messages == [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": expected_url}},
            {"type": "text", "text": "What is this?"}]}]
        assert has_images(messages)
    assert not has_images(to_openai_messages([{"role": "user", "content": "Hi"}]))


def test_files_that_are_not_images_are_left_out(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("secret")
    messages = to_openai_messages([{"role": "user", "content": [{"path": str(notes)}, "Read this"]}])
    assert messages == [{"role": "user", "content": "Read this"}]


def test_an_empty_message_adds_nothing():
    assert user_message("   ", []) is None
    assert user_message(" Hi ", []) == {"role": "user", "content": "Hi"}


def test_regenerate_drops_the_answers_after_the_last_question():
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
               {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    assert without_last_answer(history) == history[:3]
    assert without_last_answer(history[:3]) == history[:3]
    assert without_last_answer([]) == []
