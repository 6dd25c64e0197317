"""Bad input and interruptions: each a clear error, and never a folder at OUT that looks complete."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple

import pytest

from lite.quantize.convert import ConvertError, ConvertOptions, convert


def model_folder(smollm2_dir, folder, **config_changes):
    """A model folder sharing SmolLM2's weights through a symlink, with config.json edited."""
    folder.mkdir()
    for path in smollm2_dir.iterdir():
        if path.name != "config.json":
            (folder / path.name).symlink_to(path)
    config = json.loads((smollm2_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    return folder


def test_an_architecture_awq_does_not_know_is_refused(smollm2_dir, tmp_path):
    source = model_folder(smollm2_dir, tmp_path / "phi", architectures=["PhiForCausalLM"])
    with pytest.raises(ConvertError, match="AWQ does not know the layer structure of 'PhiForCausalLM'"):
        convert(ConvertOptions(source=str(source), output=tmp_path / "out", group_size=64))
    assert not (tmp_path / "out").exists()


def test_a_group_size_that_does_not_divide_the_hidden_size_names_the_ones_that_do(smollm2_dir, tmp_path):
    with pytest.raises(ConvertError, match=r"--group-size 128 does not divide hidden_size .* = 576; "
                                           r"use --group-size 32 or 64"):
        convert(ConvertOptions(source=str(smollm2_dir), output=tmp_path / "out", group_size=128))


def test_a_corrupt_safetensors_file_is_named(smollm2_dir, tmp_path):
    source = tmp_path / "corrupt"
    source.mkdir()
    for path in smollm2_dir.iterdir():
        if not path.name.endswith(".safetensors"):
            shutil.copy(path, source / path.name)
    with open(smollm2_dir / "model.safetensors", "rb") as f:
        (source / "model.safetensors").write_bytes(f.read(1 << 20))  # a download cut short
    with pytest.raises(ConvertError, match=r"model\.safetensors is not a valid safetensors file .*corrupt"):
        convert(ConvertOptions(source=str(source), output=tmp_path / "out", group_size=64))


def test_too_little_disk_space_is_caught_before_writing(smollm2_dir, tmp_path, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, (1 << 30) - (20 << 20), 20 << 20))
    with pytest.raises(ConvertError, match=r"not enough disk space .* needs about [\d,]+ MiB .* 20 MiB free"):
        convert(ConvertOptions(source=str(smollm2_dir), output=tmp_path / "out", group_size=64, method="rtn"))
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary folder


def test_an_existing_output_is_kept_without_force(smollm2_dir, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(ConvertError, match="already exists; pass --force"):
        convert(ConvertOptions(source=str(smollm2_dir), output=tmp_path / "out", group_size=64, method="rtn"))
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_force_replaces_an_existing_output(smollm2_dir, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    out = convert(ConvertOptions(source=str(smollm2_dir), output=tmp_path / "out", group_size=64, method="rtn",
                                 force=True)).output
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left beside it


def test_an_already_quantized_source_is_refused(smollm2_rtn, tmp_path):
    with pytest.raises(ConvertError, match=r"already quantized \(awq\)"):
        convert(ConvertOptions(source=str(smollm2_rtn), output=tmp_path / "out", group_size=64))


def test_the_cli_reports_bad_input_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lite.cli", "convert", "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "lite: error: --group-size 128 does not divide hidden_size" in result.stderr
    assert "Traceback" not in result.stderr


def convert_command(smollm2_gguf, out, calib):
    return [sys.executable, "-m", "lite.cli", "convert", str(smollm2_gguf), "-o", str(out), "--group-size", "64",
            "--calib-data", str(calib), "--calib-samples", "2", "--calib-seqlen", "32", "--no-clip"]


def test_a_convert_killed_midway_leaves_no_output_and_a_rerun_succeeds(smollm2_gguf, tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    out = tmp_path / "out"
    process = subprocess.Popen(convert_command(smollm2_gguf, out, calib), stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen, deadline = b"", time.monotonic() + 300
    while b"Quantizing layers" not in seen and time.monotonic() < deadline:
        chunk = process.stderr.read1(4096)
        if not chunk:
            break
        seen += chunk
    assert b"Quantizing layers" in seen, seen.decode(errors="replace")[-2000:]
    time.sleep(1.0)  # a few layers in: some shards may be written
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # the killed run's leftovers

    rerun = subprocess.run(convert_command(smollm2_gguf, out, calib), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.txt", "out"]  # stale partial folder removed


def test_convert_help_explains_every_flag(capsys):
    from lite.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", "--help"])
    assert "usage: lite convert" in capsys.readouterr().out
    for action in parser._subparsers._group_actions[0].choices["convert"]._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"--{action.dest} has no help"
