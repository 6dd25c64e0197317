"""Random-weight small configs of each supported architecture against Hugging Face transformers."""
import shutil

import pytest
import torch
import transformers

from lite.config import EngineConfig
from lite.engine.engine import LLMEngine
from lite.engine.sequence import SamplingParams

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6)

CONFIGS = {
    "qwen2": lambda v: transformers.Qwen2Config(vocab_size=v, **TINY),
    "qwen3": lambda v: transformers.Qwen3Config(vocab_size=v, head_dim=32, **TINY),
    "mistral": lambda v: transformers.MistralConfig(vocab_size=v, sliding_window=None, **TINY),
    "llama3-rope-scaling": lambda v: transformers.LlamaConfig(
        vocab_size=v, rope_theta=500000.0, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}, **TINY),
}
PROMPTS = [[5, 17, 300, 42, 9, 1000, 77], list(range(100, 140)), [3, 3, 3]]
NEW_TOKENS = 24


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def tiny_model(request, smollm2_dir, tmp_path_factory):
    torch.manual_seed(0)
    vocab = 1024
    config = CONFIGS[request.param](vocab)
    config.torch_dtype = "float32"
    hf = transformers.AutoModelForCausalLM.from_config(config).eval()
    # Random weights are too flat for greedy decoding to be a sharp test: sharpen the head.
    with torch.no_grad():
        hf.get_output_embeddings().weight.mul_(8.0)
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_dir / name, folder / name)
    engine = LLMEngine(EngineConfig(model=str(folder), backend="cpu", dtype="float32", block_size=8,
                                    kv_cache_memory=16 << 20, max_num_batched_tokens=512))
    return hf, engine


def hf_greedy(hf, prompt):
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                      return_dict_in_generate=True, output_logits=True, pad_token_id=0)
    tokens = out.sequences[0, len(prompt):].tolist()
    logprobs = torch.log_softmax(torch.cat(out.logits).float(), dim=-1)
    return tokens, logprobs


def test_greedy_tokens_match_transformers(tiny_model):
    hf, engine = tiny_model
    outputs = engine.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True))
    for prompt, output in zip(PROMPTS, outputs):
        assert output.token_ids == hf_greedy(hf, prompt)[0]


def test_logprobs_close_to_transformers(tiny_model):
    hf, engine = tiny_model
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=5)
    for prompt, output in zip(PROMPTS, engine.generate(PROMPTS, params)):
        _, reference = hf_greedy(hf, prompt)
        for step, entry in enumerate(output.logprobs):
            ids = [token for token, _ in entry.top_logprobs]
            values = torch.tensor([value for _, value in entry.top_logprobs])
            torch.testing.assert_close(values, reference[step, ids], atol=1e-4, rtol=1e-4)
