"""What every route needs: the engine, the served names, admission, metrics and the grammar compiler."""
from __future__ import annotations

import time

from fastapi import Request

from lite.engine.async_engine import AsyncLLMEngine
from lite.model_info import describe_engine
from lite.serve.admission import AdmissionGate
from lite.serve.config import ServerConfig
from lite.serve.errors import APIError
from lite.serve.logprobs import LogprobFormatter
from lite.serve.metrics import Metrics
from lite.serve.structured_output import GrammarCompiler


class ServerState:
    def __init__(self, engine: AsyncLLMEngine, config: ServerConfig):
        llm = engine.engine
        self.engine, self.llm, self.config = engine, llm, config
        self.tokenizer = llm.tokenizer
        self.model_name = config.served_model_names[0]
        self.max_model_len = llm.max_model_len
        self.model_info = describe_engine(llm, self.model_name)
        self.vocab_size = llm.model_config.vocab_size
        self.created = int(time.time())
        self.gate = AdmissionGate(llm.config.max_num_seqs, config.max_queued_seqs, config.retry_after_s)
        self.metrics = Metrics(llm, self.gate)
        self.grammars = GrammarCompiler(self.tokenizer.hf_tokenizer, self.vocab_size,
                                        self.tokenizer.eos_token_ids)
        self.logprobs = LogprobFormatter(self.tokenizer)

    def check_model(self, name: str) -> None:
        if name not in self.config.served_model_names:
            raise APIError(404, f"the model {name!r} does not exist here; this server serves "
                                f"{', '.join(self.config.served_model_names)}",
                           param="model", code="model_not_found")


def get_state(request: Request) -> ServerState:
    return request.app.state.lite
