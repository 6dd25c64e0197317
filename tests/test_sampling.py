"""Sampling parameters: the sampler on synthetic logits, and their effect through the engine."""
import pytest
import torch

from lite.engine.sampler import TOP_CANDIDATES, Sampler, apply_penalties
from lite.engine.sequence import SamplingParams, Sequence

CHAT = [{"role": "user", "content": "Tell me a story about a dragon."}]


def seq_with(params, prompt=(1, 2, 3), output=()):
    seq = Sequence(list(prompt), params)
    for token in output:
        seq.append_token(token)
    return seq


def draw(logits, params, times):
    sampler = Sampler(seed=0)
    return [sampler(logits.clone().unsqueeze(0), [seq_with(params)]).results()[0].token_id for _ in range(times)]


def test_top_k_only_draws_among_the_k_likeliest():
    logits = torch.tensor([5.0, 4.0, 3.0, 2.9, 2.8, 0.0])
    assert set(draw(logits, SamplingParams(temperature=1.0, top_k=2), 200)) == {0, 1}


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert set(draw(logits, SamplingParams(temperature=1.0, top_p=0.75), 300)) == {0, 1}


def test_min_p_drops_tokens_below_a_share_of_the_top():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.07, 0.03]))
    assert set(draw(logits, SamplingParams(temperature=1.0, min_p=0.2), 300)) == {0, 1}


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.7, 0.2, 0.1])
    counts = torch.bincount(torch.tensor(draw(probs.log(), SamplingParams(temperature=1.0), 3000)), minlength=3)
    assert torch.allclose(counts / 3000, probs, atol=0.04)


def test_a_nucleus_wider_than_the_candidates_is_still_exact():
    # A flat distribution over more tokens than the sampler's topk candidates: the sorted path.
    logits = torch.linspace(0.0, 0.5, TOP_CANDIDATES * 4)
    probs = logits.softmax(-1)
    sorted_probs, order = probs.sort(descending=True)
    nucleus = set(order[(sorted_probs.cumsum(0) - sorted_probs) < 0.9].tolist())
    drawn = draw(logits, SamplingParams(temperature=1.0, top_p=0.9), 300)
    assert set(drawn) <= nucleus and len(nucleus) > TOP_CANDIDATES and len(set(drawn)) > 250


def test_each_row_of_a_mixed_batch_samples_as_it_would_alone():
    torch.manual_seed(0)
    logits = torch.randn(4, 3000) * 3
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0.7, top_k=20, seed=1),
              SamplingParams(temperature=1.0, top_p=0.8, seed=2), SamplingParams(temperature=1.3, min_p=0.01, seed=3)]
    seqs = [seq_with(p) for p in params]
    batched = [r.token_id for r in Sampler()(logits.clone(), seqs).results()]
    alone = [Sampler()(logits[i:i + 1].clone(), [seqs[i]]).results()[0].token_id for i in range(4)]
    assert batched == alone and batched[0] == logits[0].argmax()


def test_repetition_penalty_lowers_seen_tokens_both_signs():
    logits = torch.tensor([2.0, -2.0, 2.0, 1.0])
    apply_penalties(logits, seq_with(SamplingParams(repetition_penalty=2.0), prompt=[0], output=[1]))
    assert logits.tolist() == [1.0, -4.0, 2.0, 1.0]


def test_presence_and_frequency_penalties_count_output_tokens_only():
    logits = torch.zeros(4)
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25)
    apply_penalties(logits, seq_with(params, prompt=[3], output=[1, 1, 2]))
    assert logits.tolist() == [0.0, -1.0, -0.75, 0.0]


def test_top_k_1_equals_greedy(smollm2_engine):
    greedy, top1 = smollm2_engine.generate(
        [CHAT, CHAT], [SamplingParams(temperature=0, max_tokens=32),
                       SamplingParams(temperature=0.8, top_k=1, max_tokens=32, seed=3)])
    assert top1.token_ids == greedy.token_ids


def test_same_seed_gives_the_same_sample(smollm2_engine):
    params = SamplingParams(temperature=1.0, max_tokens=32, seed=1234)
    first = smollm2_engine.generate([CHAT], params)[0]
    # Batched with other requests this time: a seed fixes the draws whatever runs beside it.
    second = smollm2_engine.generate([CHAT, "Hello", CHAT], [params, SamplingParams(temperature=1.0), params])
    assert second[0].token_ids == first.token_ids == second[2].token_ids


def test_different_seeds_give_different_samples(smollm2_engine):
    outputs = smollm2_engine.generate([CHAT] * 2, [SamplingParams(temperature=1.0, max_tokens=32, seed=s)
                                                   for s in (1, 2)])
    assert outputs[0].token_ids != outputs[1].token_ids


def test_stop_string_cuts_output_exactly(smollm2_engine):
    full = smollm2_engine.generate([CHAT], SamplingParams(temperature=0, max_tokens=48))[0].text
    stop = full[20:24]
    assert stop.strip(), "pick a stop string with visible characters"
    cut = smollm2_engine.generate([CHAT], SamplingParams(temperature=0, max_tokens=48, stop=[stop]))[0]
    assert cut.text == full[:full.index(stop)]
    assert cut.finish_reason == "stop" and cut.stop_reason == stop


def test_stop_token_id_ends_without_appearing_in_text(smollm2_engine):
    full = smollm2_engine.generate([CHAT], SamplingParams(temperature=0, max_tokens=16))[0]
    stop_id = full.token_ids[5]
    cut = smollm2_engine.generate([CHAT], SamplingParams(temperature=0, max_tokens=16, stop_token_ids=[stop_id]))[0]
    assert cut.token_ids == full.token_ids[:6]
    assert cut.finish_reason == "stop" and cut.stop_reason == stop_id
    assert cut.text == smollm2_engine.tokenizer.decode(full.token_ids[:5])


def test_max_tokens_finishes_with_length(smollm2_engine):
    output = smollm2_engine.generate([CHAT], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))[0]
    assert len(output.token_ids) == 5 and output.finish_reason == "length"


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(top_k=-2), dict(max_tokens=0),
                                 dict(min_p=1.5), dict(presence_penalty=3), dict(stop=[""]),
                                 dict(repetition_penalty=0)])
def test_invalid_sampling_params_name_the_problem(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name if name != "stop" else "stop strings"):
        SamplingParams(**bad)
