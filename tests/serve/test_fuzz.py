"""Schemathesis fuzzes every operation of the OpenAPI schema: no input may cause a 5xx."""
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import make_engine
from lite.serve.config import ServerConfig

from .conftest import MODEL, RunningServer

# A short context keeps each generated answer to a few dozen tokens, so the run stays within
# minutes on two cores; the coverage phase still tries every field's boundaries and wrong types.
FUZZ_CONTEXT = 48
MAX_EXAMPLES = 12


def test_openapi_fuzz_finds_no_server_error(smollm2_dir, tmp_path):
    llm = make_engine(smollm2_dir, max_model_len=FUZZ_CONTEXT, max_num_seqs=4, kv_cache_memory=16 << 20)
    config = ServerConfig(served_model_names=(MODEL,), max_queued_seqs=4)
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    with RunningServer(llm, config) as server:
        run = subprocess.run(
            [schemathesis, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
             "--phases", "coverage,fuzzing", "--max-examples", str(MAX_EXAMPLES), "--seed", "1",
             "--workers", "1", "--generation-database", "none", "--request-timeout", "120",
             "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=480)
        server.wait_until_idle()
        num_ok = server.metric("lite_http_requests_total", 'route="/v1/chat/completions",status="200"')
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
    assert num_ok > 0  # the fuzzer reached generation, not only validation errors
