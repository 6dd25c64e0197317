"""The engine hooks the server builds on: logit_bias and per-sequence logits processors (grammars)."""
import json

import pytest
import torch

from lite.engine.sequence import SamplingParams
from lite.serve.protocol import ChatTool, JsonSchemaFormat, ResponseFormat
from lite.serve.structured_output import GrammarCompiler, response_format_grammar, tool_call_grammar
from lite.serve.tool_calls import parse_tool_calls

PROMPT = "The capital of France is"


def run(engine, params, logits_processor=None):
    seq = engine.build_sequence(PROMPT, params, logits_processor=logits_processor)
    engine.add_sequence(seq)
    while engine.has_unfinished():
        for output in engine.step():
            if output.finished and output.request_id == seq.request_id:
                return output


def test_logit_bias_forces_a_token_but_logprobs_stay_the_models(smollm2_engine):
    token = smollm2_engine.tokenizer.encode(" banana", add_special_tokens=False)[0]
    params = SamplingParams(max_tokens=3, temperature=0, ignore_eos=True, logprobs=1,
                            logit_bias={token: 100.0})
    output = run(smollm2_engine, params)
    assert output.token_ids == [token] * 3
    assert output.logprobs[0].logprob < -1.0  # unlikely for the model itself: the bias did it


def test_logit_bias_is_validated():
    with pytest.raises(ValueError, match="logit_bias"):
        SamplingParams(logit_bias={5: 101.0})
    assert SamplingParams(logit_bias={9: 1.0, 3: -2.0}).logit_bias == ((3, -2.0), (9, 1.0))


def test_logit_bias_outside_the_vocabulary_is_refused(smollm2_engine):
    with pytest.raises(ValueError, match="logit_bias token ids"):
        smollm2_engine.build_sequence(PROMPT, SamplingParams(logit_bias={10**9: 1.0}))


def test_logits_processor_sees_each_output_and_masks_the_row(smollm2_engine):
    seen = []
    allowed = smollm2_engine.tokenizer.encode(" one two", add_special_tokens=False)

    def only_two_tokens(output_token_ids, logits):
        seen.append(list(output_token_ids))
        keep = torch.full_like(logits, float("-inf"))
        keep[allowed] = 0
        logits += keep

    output = run(smollm2_engine, SamplingParams(max_tokens=4, temperature=0.8, seed=1, ignore_eos=True),
                 only_two_tokens)
    assert set(output.token_ids) <= set(allowed)
    assert seen == [output.token_ids[:i] for i in range(4)]


def test_grammar_processor_keeps_sampled_output_inside_the_schema(smollm2_engine):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"},
                                               "n": {"type": "integer", "minimum": 0, "maximum": 999}},
              "required": ["ok", "n"], "additionalProperties": False}
    grammar = response_format_grammar(ResponseFormat(type="json_schema",
                                                     json_schema=JsonSchemaFormat(schema=schema)))
    tokenizer = smollm2_engine.tokenizer
    compiler = GrammarCompiler(tokenizer.hf_tokenizer, smollm2_engine.model_config.vocab_size,
                               tokenizer.eos_token_ids)
    for seed, processor in enumerate(compiler.processors(grammar, 3, "response_format")):
        output = run(smollm2_engine, SamplingParams(max_tokens=40, temperature=1.0, seed=seed), processor)
        value = json.loads(output.text)
        assert output.finish_reason == "stop" and set(value) == {"ok", "n"}
        assert isinstance(value["ok"], bool) and 0 <= value["n"] <= 999


def test_forced_tool_call_follows_parameters_that_use_defs_and_recursion(smollm2_engine):
    # Pydantic models with nested models give such schemas ("$defs", "$ref"), as LangChain sends them.
    parameters = {"type": "object", "required": ["home"], "additionalProperties": False,
                  "properties": {"home": {"$ref": "#/$defs/Address"}, "next": {"$ref": "#"}},
                  "$defs": {"Address": {"type": "object", "required": ["city"], "additionalProperties": False,
                                        "properties": {"city": {"type": "string", "maxLength": 12}}}}}
    tools = [ChatTool.model_validate({"type": "function", "function": {"name": "save", "parameters": parameters}})]
    tokenizer = smollm2_engine.tokenizer
    compiler = GrammarCompiler(tokenizer.hf_tokenizer, smollm2_engine.model_config.vocab_size,
                               tokenizer.eos_token_ids)
    [processor] = compiler.processors(tool_call_grammar(tools, "required"), 1, "tools")
    output = run(smollm2_engine, SamplingParams(max_tokens=60, temperature=0), processor)
    _, [call] = parse_tool_calls(output.text)
    arguments = json.loads(call.arguments)
    assert call.name == "save" and isinstance(arguments["home"]["city"], str)
    assert set(arguments) <= {"home", "next"}
