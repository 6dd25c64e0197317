"""The `lite` command as users run it."""
import subprocess
import sys

import pytest

from lite.cli import build_parser, parse_size
from lite.engine.sequence import SamplingParams


def run_lite(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "lite.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_env_lists_every_backend_with_a_reason():
    result = run_lite("env")
    assert result.returncode == 0
    for name in ("cuda", "rocm", "ascend", "intel-xpu", "cpu"):
        assert name in result.stdout
    assert "cpu        usable" in result.stdout


@pytest.mark.parametrize("command", ["generate", "chat", "env", "bench"])
def test_help_explains_every_flag(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    help_text = capsys.readouterr().out
    for action in build_parser()._subparsers._group_actions[0].choices[command]._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"--{action.dest} has no help"
    assert "usage: lite" in help_text


def test_sizes_parse_in_binary_units():
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("512M") == 512 << 20
    assert parse_size("1024") == 1024


def test_generate_on_the_bundled_model_says_it_is_the_default():
    result = run_lite("generate", "--prompt", "The capital of France is", "--max-tokens", "8",
                      "--max-model-len", "512")
    assert result.returncode == 0, result.stderr
    assert "bundled" in result.stderr.lower() or "default" in result.stderr.lower()
    assert result.stdout.strip()


def test_missing_model_folder_exits_with_a_clear_error(tmp_path):
    result = run_lite("generate", str(tmp_path / "nowhere"), "--prompt", "hi")
    assert result.returncode == 2
    assert "lite: error:" in result.stderr and "Traceback" not in result.stderr


def test_chat_streams_an_answer_and_exits_on_command():
    result = subprocess.run([sys.executable, "-m", "lite.cli", "chat", "--max-tokens", "16", "--max-model-len", "512"],
                            input="What is the capital of France?\n/exit\n", capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    answer = result.stdout.split("> ", 1)[1]
    assert answer.strip()


def test_dummy_load_format_runs_a_folder_with_only_a_config_and_tokenizer(tmp_path):
    from lite.cli import engine_from_args
    from lite.engine.dummy import write_dummy_model

    folder = write_dummy_model(tmp_path / "config-only", dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
        max_position_embeddings=256, rms_norm_eps=1e-5, torch_dtype="float32"))
    args = build_parser().parse_args(["generate", str(folder), "--load-format", "dummy", "--enforce-eager",
                                      "--kv-cache-memory", "16MiB"])
    engine = engine_from_args(args)
    assert engine.config.enforce_eager
    [output] = engine.generate(["<1> <2> <3>"], SamplingParams(max_tokens=4, ignore_eos=True))
    assert len(output.token_ids) == 4


def test_real_load_format_still_demands_weights(tmp_path):
    from lite.cli import engine_from_args
    from lite.engine.dummy import write_dummy_model
    from lite.hub import ModelSourceError

    folder = write_dummy_model(tmp_path / "config-only", {"vocab_size": 16})
    with pytest.raises(ModelSourceError, match="has no weights"):
        engine_from_args(build_parser().parse_args(["generate", str(folder)]))
