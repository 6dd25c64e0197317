"""Conversions of the bundled SmolLM2-135M, made once per test session and shared.

Group size 64: SmolLM2's hidden size, 576, is not a multiple of the default 128. Calibration is the
offline default (text the model writes itself) but small, 8 x 128 tokens, to keep CI short.
"""
from pathlib import Path

import pytest

from lite.quantize.calibration import CalibrationSettings
from lite.quantize.convert import ConvertOptions, convert

GROUP_SIZE = 64
HELDOUT_TEXT = Path(__file__).parent.parent / "data" / "heldout.txt"


@pytest.fixture(scope="session")
def smollm2_awq(smollm2_gguf, tmp_path_factory) -> Path:
    """AWQ W4A16 + KV int8, converted from the bundled GGUF file."""
    out = tmp_path_factory.mktemp("convert") / "smollm2-awq"
    convert(ConvertOptions(source=str(smollm2_gguf), output=out, group_size=GROUP_SIZE, kv="int8",
                           calibration=CalibrationSettings(num_samples=8, seq_len=128)))
    return out


@pytest.fixture(scope="session")
def smollm2_rtn(smollm2_gguf, tmp_path_factory) -> Path:
    """Round-to-nearest int4 with the same group size: the baseline AWQ must beat."""
    out = tmp_path_factory.mktemp("convert") / "smollm2-rtn"
    convert(ConvertOptions(source=str(smollm2_gguf), output=out, group_size=GROUP_SIZE, method="rtn"))
    return out
