"""`lite convert`: source model -> AWQ W4A16 (+ KV cache setting) -> a folder lite and others serve.

Stages: fetch (hub.resolve_model) -> check (architecture, group size, files, disk space) ->
calibrate -> quantize layer by layer -> write config and tokenizer -> rename into place.
Everything is written to a hidden temporary folder beside OUT and renamed at the end, so an
interrupted or failed convert never leaves a folder at OUT.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lite.config import KV_CACHE_DTYPES, ModelConfig
from lite.quantize.awq import AWQSettings
from lite.quantize.calibration import CalibrationSettings
from lite.quantize.checkpoint_io import SourceCheckpoint
from lite.quantize.layer_table import layer_table
from lite.quantize.write import estimate_output_bytes, write_output

logger = logging.getLogger("lite.quantize")

WEIGHT_FORMATS = ("none", "w4a16")
GROUP_SIZES = (32, 64, 128)
METHODS = ("awq", "rtn")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# Kept beside the estimate: filesystem blocks, the index and tokenizer files, a little slack.
DISK_MARGIN_BYTES = 64 << 20
PARTIAL_SUFFIX = ".partial"
WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.index.json")


class ConvertError(ValueError):
    """Bad input to convert; the message says what to change."""


@dataclass(frozen=True)
class ConvertOptions:
    source: str | None  # anything hub.resolve_model takes; None: the bundled SmolLM2
    output: Path
    weight: str = "w4a16"  # none | w4a16
    kv: str = "none"  # none | int8 | int4: recorded in lite_config.json for the engine
    group_size: int = 128
    method: str = "awq"  # awq | rtn (round-to-nearest, the baseline AWQ is measured against)
    clip: bool = True  # AWQ's clipping search
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    dtype: str = "auto"  # unquantized tensors on disk; auto: float16 with w4a16 (AutoAWQ's), else the source's
    force: bool = False
    revision: str | None = None
    hub: str = "auto"

    def __post_init__(self):
        problems = []
        if self.weight not in WEIGHT_FORMATS:
            problems.append(f"--weight must be one of {', '.join(WEIGHT_FORMATS)}")
        if self.kv not in KV_CACHE_DTYPES:
            problems.append(f"--kv must be one of {', '.join(KV_CACHE_DTYPES)}")
        if self.group_size not in GROUP_SIZES:
            problems.append(f"--group-size must be one of {', '.join(map(str, GROUP_SIZES))}")
        if self.method not in METHODS:
            problems.append(f"--method must be one of {', '.join(METHODS)}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            problems.append(f"--dtype must be auto or one of {', '.join(DTYPES)}")
        if problems:
            raise ConvertError("; ".join(problems))

    @property
    def awq_settings(self) -> AWQSettings:
        search = self.method == "awq"
        return AWQSettings(group_size=self.group_size, search_scales=search, clip=search and self.clip)


@dataclass
class ConvertSummary:
    output: Path
    source_folder: Path
    seconds: float
    stage_seconds: dict[str, float]
    source_bytes: int
    output_bytes: int
    peak_rss_bytes: int


def convert(options: ConvertOptions) -> ConvertSummary:
    from lite.hub import resolve_model

    start = time.perf_counter()
    stages: dict[str, float] = {}
    out = Path(options.output).expanduser().resolve()
    _check_output(out, options.force)

    _stage(1, "fetch", f"resolving {options.source or 'the bundled SmolLM2-135M-Instruct'}")
    folder = resolve_model(options.source, revision=options.revision, hub=options.hub)
    stages["fetch"] = time.perf_counter() - start

    _stage(2, "check", f"{folder}")
    if out == folder.resolve() or folder.resolve() in out.parents:
        raise ConvertError(f"the output {out} must not be the source folder or inside it")
    cfg = ModelConfig.from_folder(folder)
    try:
        source = SourceCheckpoint(folder)
    except ValueError as exc:  # no safetensors, or a corrupt one
        raise ConvertError(str(exc)) from None
    dtype = _output_dtype(options, cfg)
    check_model(cfg, options)
    _check_disk_space(out, estimate_output_bytes(cfg, source, options, dtype))
    stages["check"] = time.perf_counter() - start - sum(stages.values())

    staging = _make_staging_folder(out)
    try:
        write_output(folder, cfg, source, staging, options, dtype, stages, _stage)
        _stage(5, "finish", f"moving the result into {out}")
        _move_into_place(staging, out, options.force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful move
    return ConvertSummary(
        output=out, source_folder=folder, seconds=time.perf_counter() - start, stage_seconds=stages,
        source_bytes=source.num_bytes, output_bytes=folder_bytes(out), peak_rss_bytes=peak_rss_bytes())


def check_model(cfg: ModelConfig, options: ConvertOptions) -> None:
    """Refuse what convert cannot do before any slow work starts."""
    if cfg.hf_config.get("quantization_config"):
        method = cfg.hf_config["quantization_config"].get("quant_method")
        raise ConvertError(f"the source is already quantized ({method}); convert its unquantized original")
    if options.weight == "none":
        return
    try:
        layer_table(cfg.architecture)
    except ValueError as exc:
        raise ConvertError(str(exc)) from None
    inputs = {"hidden_size (the input of q/k/v/gate/up)": cfg.hidden_size,
              "num_attention_heads x head_dim (the input of o_proj)": cfg.num_attention_heads * cfg.head_dim,
              "intermediate_size (the input of down_proj)": cfg.intermediate_size}
    for what, size in inputs.items():
        if size % options.group_size:
            fits = [g for g in GROUP_SIZES if size % g == 0 and all(s % g == 0 for s in inputs.values())]
            hint = f"use --group-size {' or '.join(map(str, fits))}" if fits else "no supported group size fits"
            raise ConvertError(f"--group-size {options.group_size} does not divide {what} = {size}; {hint}")
    for size in (cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim, cfg.intermediate_size):
        if size % 8:
            raise ConvertError(f"an output size of {size} cannot be packed in the AutoAWQ layout "
                               "(8 int4 values per int32); this model cannot be written as AWQ")


def _output_dtype(options: ConvertOptions, cfg: ModelConfig) -> torch.dtype:
    if options.dtype != "auto":
        return DTYPES[options.dtype]
    if options.weight == "w4a16":
        return torch.float16  # what AutoAWQ writes and its GEMM kernels expect beside the int4 weights
    from lite.engine.loader import checkpoint_dtype
    return checkpoint_dtype(cfg)


def _stage(number: int, name: str, detail: str) -> None:
    logger.info("[%d/5] %s: %s", number, name, detail)


def _check_output(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise ConvertError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out} exists and is not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConvertError(f"cannot create the folder {out.parent} for the output: {error}") from error


def _check_disk_space(out: Path, needed: int) -> None:
    free = shutil.disk_usage(out.parent).free
    if needed + DISK_MARGIN_BYTES > free:
        raise ConvertError(f"not enough disk space for {out}: the output needs about "
                           f"{(needed + DISK_MARGIN_BYTES) / 2**20:,.0f} MiB and {out.parent} has "
                           f"{free / 2**20:,.0f} MiB free; free some space or write elsewhere")


def _make_staging_folder(out: Path) -> Path:
    """A hidden folder beside OUT (same filesystem, so the final rename is atomic). Partial folders
    of earlier converts to the same OUT whose process is gone (killed) are removed first."""
    for stale in out.parent.glob(f".{out.name}.*{PARTIAL_SUFFIX}"):
        pid_file = stale / ".pid"
        pid = int(pid_file.read_text()) if pid_file.is_file() else None
        if pid is None or not _is_running(pid):
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=PARTIAL_SUFFIX, dir=out.parent))
    (staging / ".pid").write_text(str(os.getpid()))
    return staging


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _move_into_place(staging: Path, out: Path, force: bool) -> None:
    (staging / ".pid").unlink()
    _open_permissions(staging)
    if out.exists() and force:
        # Move the old folder aside first: OUT is never half old, half new.
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        out.rename(old / out.name)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


def _open_permissions(folder: Path) -> None:
    """mkdtemp makes the folder private (0700) and safetensors writes 0600 files; the result should
    be as readable as any folder the user creates (e.g. by a server running as another user)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def peak_rss_bytes() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
