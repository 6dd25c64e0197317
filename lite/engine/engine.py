"""LLMEngine: requests in, tokens out, one scheduler step at a time."""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

import torch

from lite.backends import KVCacheSpec, select
from lite.backends.base import KV_CACHE_BITS
from lite.config import EngineConfig, ModelConfig, SchedulerConfig, resolve_kv_cache_dtype
from lite.engine.block_manager import BlockManager
from lite.engine.loader import checkpoint_dtype, load_model
from lite.engine.outputs import RequestOutput, RequestState
from lite.engine.runner import LaunchedStep, ModelRunner
from lite.engine.scheduler import ScheduledBatch, Scheduler
from lite.engine.sequence import FinishReason, SamplingParams, Sequence
from lite.engine.tokenizer import Tokenizer

logger = logging.getLogger("lite.engine")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LLMEngine:
    def __init__(self, config: EngineConfig):
        start = time.perf_counter()
        self.config = config
        folder = Path(config.model)
        self.model_config = cfg = ModelConfig.from_folder(folder)
        self.tokenizer = Tokenizer(folder, chat_template=config.chat_template)
        self.backend = select(config.backend)
        self.dtype = self._resolve_dtype(config.dtype, cfg)
        self.max_model_len = self._resolve_max_model_len(config.max_model_len, cfg)
        self.kv_cache_dtype = resolve_kv_cache_dtype(config.kv_cache_dtype, folder)
        torch.manual_seed(config.seed)
        self.model = load_model(folder, cfg, self.backend.ops, self.dtype, self.backend.device,
                                self.max_model_len, dummy=config.load_format == "dummy",
                                quantize_lm_head=config.quantize_lm_head)
        self.block_size = config.block_size or self.backend.preferred_block_size
        spec = self._size_kv_cache(cfg)
        self.num_kv_blocks = spec.num_blocks
        self.block_manager = BlockManager(spec.num_blocks, spec.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(SchedulerConfig(
            max_num_seqs=config.max_num_seqs, max_num_batched_tokens=config.max_num_batched_tokens,
            max_model_len=self.max_model_len, enable_chunked_prefill=config.enable_chunked_prefill),
            self.block_manager)
        self.runner = ModelRunner(self.model, self.backend, self.backend.allocate_kv_cache(spec),
                                  self.block_size, config.seed)
        if not config.enforce_eager:
            self.runner.capture_graphs(config.max_num_seqs, self.max_model_len)
        self.async_scheduling = (self.backend.runs_ahead if config.async_scheduling is None
                                 else config.async_scheduling)
        # Launched steps whose tokens have not reached the host yet: at most one under async
        # scheduling, none otherwise between calls to step().
        self.in_flight: deque[tuple[ScheduledBatch, LaunchedStep]] = deque()
        self.requests: dict[str, RequestState] = {}
        self.total_computed_tokens = 0  # tokens run through the model: prefill savings show here
        logger.info("engine ready in %.1fs: %s on %s, %s, max_model_len %d, %d KV blocks of %d tokens "
                    "(%d tokens, KV cache %s)", time.perf_counter() - start, cfg.architecture,
                    self.backend.name, str(self.dtype).removeprefix("torch."), self.max_model_len,
                    spec.num_blocks, spec.block_size, spec.num_blocks * spec.block_size,
                    self.kv_cache_dtype if spec.kv_bits else "unquantized")

    def _resolve_dtype(self, name: str, cfg: ModelConfig) -> torch.dtype:
        if name == "auto":
            return self.backend.default_dtype(checkpoint_dtype(cfg))
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; choose auto, {', '.join(DTYPES)}")
        return DTYPES[name]

    @staticmethod
    def _resolve_max_model_len(requested: int | None, cfg: ModelConfig) -> int:
        limit = cfg.max_position_embeddings
        if cfg.sliding_window:
            # Attention here is full, which equals sliding-window attention up to the window.
            limit = min(limit, cfg.sliding_window)
        if requested is None:
            return limit
        if requested > limit:
            raise ValueError(f"max_model_len {requested} exceeds what the model supports ({limit}: "
                             "max_position_embeddings / sliding_window in config.json)")
        return requested

    def _size_kv_cache(self, cfg: ModelConfig) -> KVCacheSpec:
        spec = KVCacheSpec(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim,
                           self.block_size, 0, self.dtype, KV_CACHE_BITS[self.kv_cache_dtype])
        per_block = self.backend.kv_bytes_per_block(spec)
        budget = self.config.kv_cache_memory or self.backend.measure_kv_memory(
            self.config.memory_fraction, lambda: self._warm_up(spec))
        blocks_per_seq = -(-self.max_model_len // self.block_size)
        # More blocks than max_num_seqs full-length sequences can use would only waste memory.
        spec.num_blocks = min(budget // per_block, blocks_per_seq * self.config.max_num_seqs)
        if spec.num_blocks < blocks_per_seq:
            raise ValueError(
                f"the KV cache budget ({budget / 2**20:.0f} MiB) holds {spec.num_blocks * self.block_size} "
                f"tokens, fewer than one sequence of max_model_len {self.max_model_len} needs "
                f"({blocks_per_seq * per_block / 2**20:.0f} MiB); raise --kv-cache-memory or lower "
                "--max-model-len")
        return spec

    def _warm_up(self, spec: KVCacheSpec) -> None:
        """One prefill of the largest step the scheduler builds, on a scratch cache just large
        enough: the backend measures peak activation memory (and compiles its kernels) with it."""
        tokens = min(self.config.max_num_batched_tokens, self.max_model_len)
        num_blocks = -(-tokens // self.block_size)
        scratch = self.backend.allocate_kv_cache(replace(spec, num_blocks=num_blocks))
        seq = Sequence([0] * tokens, SamplingParams(temperature=0, max_tokens=1))
        seq.block_ids = list(range(num_blocks))
        ModelRunner(self.model, self.backend, scratch, self.block_size).launch([seq], [tokens]).samples()

    def build_sequence(self, prompt: str | list[int] | list[dict], params: SamplingParams | None = None,
                       request_id: str | None = None, prompt_embeds: torch.Tensor | None = None,
                       logits_processor=None) -> Sequence:
        """Tokenize and validate a request without touching engine state (safe from any thread).
        `prompt` is text, token ids, or chat messages rendered with the model's chat template;
        `logits_processor` (see Sequence) belongs to this sequence alone."""
        params = params or SamplingParams()
        if isinstance(prompt, str):
            token_ids = self.tokenizer.encode(prompt)
        elif prompt and isinstance(prompt[0], dict):
            token_ids = self.tokenizer.apply_chat_template(prompt)
        else:
            token_ids = list(prompt)
        if not token_ids:
            raise ValueError("the prompt is empty: give at least one token of text")
        if any(not 0 <= t < self.model_config.vocab_size for t in token_ids):
            raise ValueError(f"prompt token ids must lie in [0, {self.model_config.vocab_size})")
        if len(token_ids) >= self.max_model_len:
            raise ValueError(f"the prompt has {len(token_ids)} tokens but the context holds "
                             f"{self.max_model_len} (max_model_len), with room for at least one new "
                             "token; shorten the prompt or raise --max-model-len")
        if any(token_id >= self.model_config.vocab_size for token_id, _ in params.logit_bias):
            raise ValueError(f"logit_bias token ids must lie in [0, {self.model_config.vocab_size})")
        if prompt_embeds is not None and prompt_embeds.shape != (len(token_ids), self.model_config.hidden_size):
            raise ValueError(f"prompt_embeds must be [{len(token_ids)}, {self.model_config.hidden_size}], "
                             f"got {list(prompt_embeds.shape)}")
        seq = Sequence(token_ids, params, prompt_embeds=prompt_embeds, logits_processor=logits_processor)
        if request_id is not None:
            seq.request_id = request_id
        return seq

    def add_sequence(self, seq: Sequence) -> None:
        if seq.request_id in self.requests:
            raise ValueError(f"request id {seq.request_id!r} is already in use")
        self.requests[seq.request_id] = RequestState(seq, self.tokenizer, self.max_model_len)
        self.scheduler.add(seq)

    def add_request(self, prompt, params: SamplingParams | None = None, request_id: str | None = None,
                    prompt_embeds: torch.Tensor | None = None) -> str:
        seq = self.build_sequence(prompt, params, request_id, prompt_embeds)
        self.add_sequence(seq)
        return seq.request_id

    def abort(self, request_id: str) -> RequestOutput | None:
        state = self.requests.pop(request_id, None)
        if state is None:
            return None
        self.scheduler.abort(request_id)
        return state.finish(FinishReason.ABORT)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or bool(self.in_flight)

    def step(self) -> list[RequestOutput]:
        """Launch the next step and report the tokens that reached the host. Under async
        scheduling that is the previous step's: the host schedules and detokenizes while the
        device computes."""
        outputs = []
        if self.in_flight and not self._may_run_ahead():
            outputs += self._finish(*self.in_flight.popleft())
        batch = self.scheduler.schedule()
        if not batch.is_empty:
            launched = self.runner.launch(batch.seqs, batch.num_new_tokens)
            sampled = set(launched.sampled)
            self.scheduler.advance(batch, [i in sampled for i in range(len(batch.seqs))])
            self.total_computed_tokens += batch.num_tokens
            self.in_flight.append((batch, launched))
        # The newest step stays in flight only while the device has it to work on.
        keep = 1 if self.async_scheduling and not batch.is_empty else 0
        while len(self.in_flight) > keep:
            outputs += self._finish(*self.in_flight.popleft())
        return outputs

    def _may_run_ahead(self) -> bool:
        return self.async_scheduling and not any(seq.reads_own_tokens for seq in self.scheduler.running)

    def _finish(self, batch: ScheduledBatch, launched: LaunchedStep) -> list[RequestOutput]:
        samples = launched.samples()
        self.scheduler.resolve(batch, [s.token_id if s is not None else None for s in samples])
        outputs = []
        for seq, sample in zip(batch.seqs, samples):
            state = self.requests.get(seq.request_id)
            # Finished while its last step ran (a stop, an abort): that step's draw is dropped.
            if sample is None or state is None or state.seq is not seq:
                continue
            output = state.on_token(sample)
            if output.finished:
                self.scheduler.finish(seq, seq.finish_reason or FinishReason(output.finish_reason))
                del self.requests[seq.request_id]
            outputs.append(output)
        return outputs

    def generate(self, prompts: list, params: SamplingParams | list[SamplingParams] | None = None
                 ) -> list[RequestOutput]:
        """Run prompts to completion, continuously batched; outputs in prompt order."""
        params_list = params if isinstance(params, list) else [params] * len(prompts)
        ids = [self.add_request(p, sp) for p, sp in zip(prompts, params_list)]
        final: dict[str, RequestOutput] = {}
        while self.has_unfinished():
            for output in self.step():
                if output.finished:
                    final[output.request_id] = output
        return [final[i] for i in ids]

    def stats(self) -> dict:
        bm = self.block_manager
        return {"num_running": self.scheduler.num_running, "num_waiting": self.scheduler.num_waiting,
                "num_preemptions": self.scheduler.num_preemptions, "num_kv_blocks": bm.num_blocks,
                "num_free_kv_blocks": bm.num_free_blocks,
                "prefix_cache_queried_tokens": bm.prefix_cache_queried_tokens,
                "prefix_cache_hit_tokens": bm.prefix_cache_hit_tokens}
