"""Safetensors in and out for convert: read a source one layer at a time, write bounded shards.

Reading maps a file only while a batch of tensors is copied out, so the source's pages leave the
process's resident set again; writing holds at most one shard's worth of output before it goes
to disk. Together they keep convert's memory near one decoder layer, whatever the model's size.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

# Output shards are written once this much is pending (the AutoAWQ/HF default is 5 GB; smaller
# shards keep convert's peak memory near one decoder layer).
MAX_SHARD_BYTES = 256 << 20
INDEX_FILE = "model.safetensors.index.json"


class SourceCheckpoint:
    """Tensor name -> shard of a Hugging Face folder, every shard's header checked up front."""

    def __init__(self, folder: Path):
        files = sorted(Path(folder).glob("*.safetensors"))
        if not files:
            raise ValueError(f"{folder} has no *.safetensors weights; convert reads safetensors only "
                             "(re-save pytorch_model*.bin checkpoints with transformers first)")
        self.files: dict[str, Path] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.num_bytes = 0
        for path in files:
            try:
                with safe_open(path, framework="pt") as f:
                    for name in f.keys():
                        self.files[name] = path
                        self.shapes[name] = tuple(f.get_slice(name).get_shape())
            except (SafetensorError, OSError, ValueError) as exc:
                raise ValueError(f"{path} is not a valid safetensors file ({exc}); the file is corrupt "
                                 "or truncated: download or convert it again") from None
            self.num_bytes += path.stat().st_size

    def names(self) -> list[str]:
        return list(self.files)

    def read(self, names: list[str], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Copies of the named tensors (cast to dtype when given), each file mapped only meanwhile."""
        by_file = defaultdict(list)
        for name in names:
            by_file[self.files[name]].append(name)
        out = {}
        for path, file_names in by_file.items():
            try:
                with safe_open(path, framework="pt") as f:
                    for name in file_names:
                        tensor = f.get_tensor(name)
                        out[name] = tensor if dtype is None else tensor.to(dtype)
            except (SafetensorError, OSError, RuntimeError) as exc:
                raise ValueError(f"reading {', '.join(file_names[:2])} from {path} failed ({exc}); the "
                                 "file is corrupt or truncated: download or convert it again") from None
        return out


class ShardWriter:
    def __init__(self, folder: Path, max_shard_bytes: int = MAX_SHARD_BYTES):
        self.folder = folder
        self.max_shard_bytes = max_shard_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.shards: list[list[str]] = []  # tensor names per written shard
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += tensor.numel() * tensor.element_size()
        if self.pending_bytes >= self.max_shard_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        save_file(self.pending, self.folder / f"shard-{len(self.shards):05d}.tmp", metadata={"format": "pt"})
        self.shards.append(list(self.pending))
        self.total_bytes += self.pending_bytes
        self.pending, self.pending_bytes = {}, 0

    def finish(self) -> None:
        """Give the shards their Hugging Face names and write the index when there are several."""
        self._flush()
        count = len(self.shards)
        weight_map = {}
        for i, names in enumerate(self.shards):
            final = "model.safetensors" if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            (self.folder / f"shard-{i:05d}.tmp").rename(self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
        if count > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
