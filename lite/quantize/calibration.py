"""Calibration tokens for AWQ: a text/JSONL file, a dataset by name, or text the model writes itself.

The offline default is data-free calibration: the model answers a fixed set of varied seed
prompts (sampled, seeded), and its own prompts + answers become the calibration text. The
activations then follow the model's own distribution, including its chat template, with no
download; see docs/quantization.md. Generation runs the whole source model once, so for a
model larger than RAM pass --calib-data.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger("lite.quantize")

SEED_PROMPTS = (
    "Explain how photosynthesis turns sunlight into chemical energy.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Write a Python function that merges two sorted lists, and explain how it works.",
    "Describe the causes and consequences of the fall of the Western Roman Empire.",
    "What are the main differences between a virus and a bacterium?",
    "Give step-by-step instructions for baking a loaf of sourdough bread.",
    "Solve this problem and show your reasoning: a train travels 240 km in 3 hours; how long does "
    "it take to travel 400 km at the same speed?",
    "Summarize the plot of a famous novel of your choice in a few paragraphs.",
    "Write a polite email asking a colleague to review a report before Friday.",
    "Explain what a neural network is to a curious twelve-year-old.",
    "Compare renewable and fossil energy sources in terms of cost, reliability and pollution.",
    "Write a poem about autumn in a quiet city.",
    "How does the human immune system remember an infection it has seen before?",
    "Explain the difference between TCP and UDP, with an example where each is the better choice.",
    "Describe a typical day in the life of a medieval blacksmith.",
    "What should someone consider when choosing between renting and buying a home?",
)
GENERATION_ROUNDS = 4  # more rounds of seed prompts while the text is still too short


@dataclass(frozen=True)
class CalibrationSettings:
    source: str | None = None  # a .txt/.jsonl file or a dataset name ("name" or "name:config"); None: self-generated
    num_samples: int = 16
    seq_len: int = 256
    seed: int = 0

    def __post_init__(self):
        if self.num_samples < 1 or self.seq_len < 16:
            raise ValueError(f"calibration needs at least 1 sample of 16 tokens, got {self.num_samples} "
                             f"of {self.seq_len}")


def calibration_tokens(model_dir: Path, settings: CalibrationSettings) -> torch.Tensor:
    """[samples, seq_len] token ids."""
    from lite.engine.tokenizer import Tokenizer

    if settings.source is None:
        stream = _self_generated(model_dir, settings)
    else:
        tokenizer = Tokenizer(model_dir)
        separator = list(tokenizer.eos_token_ids[:1])
        stream = []
        for text in _texts(settings.source, settings.num_samples * settings.seq_len, tokenizer):
            stream += tokenizer.encode(text, add_special_tokens=False) + separator
    return _windows(stream, settings)


def _windows(stream: list[int], settings: CalibrationSettings) -> torch.Tensor:
    available = len(stream) // settings.seq_len
    if available == 0:
        raise ValueError(f"the calibration text has {len(stream)} tokens, fewer than one sample of "
                         f"--calib-seqlen {settings.seq_len}; give more text or a shorter --calib-seqlen")
    count = min(available, settings.num_samples)
    if count < settings.num_samples:
        logger.warning("calibration text holds %d samples of %d tokens, not the %d asked for; using %d",
                       available, settings.seq_len, settings.num_samples, count)
    starts = torch.linspace(0, available - 1, count).round().long() * settings.seq_len  # spread over the text
    tokens = torch.tensor(stream, dtype=torch.long)
    return torch.stack([tokens[s:s + settings.seq_len] for s in starts.tolist()])


def _texts(source: str, wanted_tokens: int, tokenizer) -> list[str]:
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix == ".jsonl":
            return [_jsonl_text(line, path) for line in path.read_text().splitlines() if line.strip()]
        return [path.read_text()]
    return _dataset_texts(source, wanted_tokens, tokenizer)


def _jsonl_text(line: str, path: Path) -> str:
    record = json.loads(line)
    if isinstance(record, dict):
        text = record.get("text") or next((v for v in record.values() if isinstance(v, str)), None)
        if text is not None:
            return text
    raise ValueError(f"{path}: each JSONL line needs a 'text' string field, got {line[:80]!r}")


def _dataset_texts(name: str, wanted_tokens: int, tokenizer) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise ValueError(f"--calib-data {name!r} is not a file; loading a dataset by name needs "
                         "`pip install datasets` and network access (or pass a .txt/.jsonl file, or "
                         "leave --calib-data out for self-generated calibration text)") from None
    dataset_name, _, config = name.partition(":")
    rows = datasets.load_dataset(dataset_name, config or None, split="train", streaming=True)
    texts, tokens = [], 0
    for row in rows:
        text = row.get("text") or ""
        if text.strip():
            texts.append(text)
            tokens += len(tokenizer.encode(text, add_special_tokens=False))
        if tokens >= wanted_tokens:
            break
    return texts


def _self_generated(model_dir: Path, settings: CalibrationSettings) -> list[int]:
    from tqdm.auto import tqdm

    from lite.config import EngineConfig
    from lite.engine.engine import LLMEngine
    from lite.engine.sequence import SamplingParams

    engine = LLMEngine(EngineConfig(model=str(model_dir), seed=settings.seed,
                                    max_model_len=_generation_context(model_dir, settings.seq_len),
                                    max_num_seqs=settings.num_samples))
    has_template = bool(engine.tokenizer.hf_tokenizer.chat_template)
    wanted = settings.num_samples * settings.seq_len
    stream: list[int] = []
    with tqdm(total=wanted, desc="Calibration: generating text", unit="tok") as progress:
        for round_index in range(GENERATION_ROUNDS):
            for i in range(settings.num_samples):
                prompt = SEED_PROMPTS[(i + round_index) % len(SEED_PROMPTS)]
                params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=settings.seq_len,
                                        seed=settings.seed + round_index * settings.num_samples + i)
                engine.add_request([{"role": "user", "content": prompt}] if has_template else prompt, params)
            finished = []
            while engine.has_unfinished():
                for output in engine.step():
                    progress.update()
                    if output.finished:
                        finished.append(output)
            for output in finished:
                stream += output.prompt_token_ids + output.token_ids
            if len(stream) >= wanted:
                break
    return stream


def _generation_context(model_dir: Path, seq_len: int) -> int:
    from lite.config import ModelConfig

    # Room for the chat-templated seed prompt before the generated seq_len tokens.
    return min(ModelConfig.from_folder(model_dir).max_position_embeddings, seq_len + 256)
