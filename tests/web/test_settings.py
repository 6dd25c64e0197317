"""Generation settings: defaults from the model's generation config, and what the form becomes."""
import pytest

from lite.web.settings import FALLBACK_MAX_TOKENS, FALLBACK_TEMPERATURE, FALLBACK_TOP_P, GenerationSettings


def test_defaults_follow_the_models_generation_config():
    settings = GenerationSettings.from_generation_config(
        {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 256}, max_model_len=4096)
    assert settings == GenerationSettings(temperature=0.6, top_p=0.95, max_tokens=256)


def test_a_silent_generation_config_gets_chat_ui_defaults():
    settings = GenerationSettings.from_generation_config({}, max_model_len=None)
    assert (settings.temperature, settings.top_p, settings.max_tokens) == (
        FALLBACK_TEMPERATURE, FALLBACK_TOP_P, FALLBACK_MAX_TOKENS)


def test_do_sample_false_means_greedy_and_max_tokens_fits_the_context():
    settings = GenerationSettings.from_generation_config(
        {"do_sample": False, "temperature": 0.9, "max_new_tokens": 4096}, max_model_len=1024)
    assert settings.temperature == 0.0 and settings.max_tokens == 1023


def test_the_form_becomes_engine_sampling_params():
    settings = GenerationSettings.from_form(0.0, 0.8, 24.0, "\nEND\n###\n")
    params = settings.sampling_params()
    assert (params.temperature, params.top_p, params.max_tokens, params.stop) == (0.0, 0.8, 24, ("END", "###"))
    assert params.is_greedy


def test_the_form_becomes_openai_request_fields():
    assert GenerationSettings.from_form(0.7, 1.0, 64, "").request_fields() == {
        "temperature": 0.7, "top_p": 1.0, "max_tokens": 64}
    assert GenerationSettings.from_form(0.7, 1.0, 64, "END").request_fields()["stop"] == ["END"]


@pytest.mark.parametrize("form, problem", [((3.0, 1.0, 16, ""), "temperature"), ((0.5, 0.0, 16, ""), "top-p"),
                                           ((0.5, 1.0, 0, ""), "max tokens")])
def test_out_of_range_settings_say_which_and_why(form, problem):
    with pytest.raises(ValueError, match=problem):
        GenerationSettings.from_form(*form)
