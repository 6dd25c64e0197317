"""`lite serve`: the OpenAI-compatible HTTP server on uvicorn."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from lite.cli import add_listen_args, add_model_args, engine_from_args, parse_size

logger = logging.getLogger("lite.serve")

BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"


def add_serve_parser(sub) -> None:
    parser = sub.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve MODEL over HTTP with OpenAI's API: /v1/chat/completions (tools, JSON "
                    "schema output, streaming), /v1/completions, /v1/models, /health, /metrics "
                    "(Prometheus) and the API docs at /docs. SIGTERM drains requests in flight, then "
                    "exits 0.")
    add_model_args(parser)
    server = parser.add_argument_group("server")
    add_listen_args(server, port=8000)
    server.add_argument("--api-keys", nargs="+", metavar="KEY",
                        default=[k for k in os.environ.get("LITE_API_KEYS", "").split(",") if k],
                        help="accepted API keys: /v1 requests must send 'Authorization: Bearer KEY', "
                             "others get 401 (default: $LITE_API_KEYS, comma-separated; none: no auth)")
    server.add_argument("--served-model-name", nargs="+", metavar="NAME",
                        help="names clients may put in 'model'; /v1/models lists them all "
                             "(default: the model argument's name, SmolLM2-135M-Instruct when none)")
    server.add_argument("--kv-cache-fraction", type=float, default=0.9,
                        help="share of the memory free after loading that sizes the KV cache when "
                             "--kv-cache-memory is not given (default: 0.9; the CPU backend uses half "
                             "of it, at most 4 GiB)")
    server.add_argument("--max-queued-seqs", type=int, default=256,
                        help="sequences that may wait beyond --max-num-seqs; past that requests get "
                             "503 with Retry-After instead of queueing without bound (default: 256)")
    server.add_argument("--retry-after", type=int, default=1, metavar="SECONDS",
                        help="the Retry-After an overloaded server sends (default: 1)")
    server.add_argument("--cors-origins", nargs="+", metavar="ORIGIN", default=[],
                        help="browser origins allowed to call the API, e.g. http://localhost:3000, or * "
                             "(default: none)")
    server.add_argument("--log-requests", action="store_true",
                        help="log one line per request: choices, token counts, finish reasons, "
                             "latency and sampling settings (never the prompt)")
    server.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGTERM, how long requests in flight may run before they are "
                             "aborted (default: 30)")
    server.add_argument("--max-request-body", type=parse_size, default=4 << 20, metavar="SIZE",
                        help="largest request body; larger ones get 413 (default: 4MiB)")
    server.add_argument("--print-examples", action="store_true",
                        help="once the server is ready, print a curl command and a Python snippet "
                             "that call it, ready to paste into another terminal")
    server.add_argument("--web", action="store_true",
                        help="also serve the web chat demo (as `lite gradio`) at /web on the same port, "
                             "over the same engine; with --api-keys the page asks for a key as its "
                             "password. Needs `pip install 'lite-deploy[web]'`")
    server.add_argument("--uvicorn-log-level", default="warning",
                        choices=["critical", "error", "warning", "info", "debug", "trace"],
                        help="uvicorn's own log level; 'info' adds an access log line per request "
                             "(default: warning)")
    parser.set_defaults(func=cmd_serve)


def served_model_names(args) -> tuple[str, ...]:
    return tuple(args.served_model_name) if args.served_model_name else (model_name(args.model),)


def model_name(model: str | None) -> str:
    """The name a model argument goes by: a folder's or GGUF file's name, else the hub id."""
    if model is None:
        return BUNDLED_MODEL_NAME
    path = Path(model).expanduser()
    return (path.stem if path.suffix.lower() == ".gguf" else path.name) if path.exists() else model


def cmd_serve(args) -> int:
    import uvicorn

    from lite.engine.async_engine import AsyncLLMEngine
    from lite.serve.app import build_app
    from lite.serve.config import ServerConfig

    config = ServerConfig(
        served_model_names=served_model_names(args), api_keys=tuple(args.api_keys),
        max_queued_seqs=args.max_queued_seqs, retry_after_s=args.retry_after,
        max_request_bytes=args.max_request_body, cors_origins=tuple(args.cors_origins),
        log_requests=args.log_requests, shutdown_timeout_s=args.shutdown_timeout)
    if args.web:
        from lite.web.app import require_gradio
        require_gradio()  # before minutes of model loading, not after
    engine = AsyncLLMEngine(engine_from_args(args))
    app = build_app(engine, config)
    if args.web:
        _mount_web_demo(app, engine, config)
    server = uvicorn.Server(uvicorn.Config(
        app, host=args.host, port=args.port, log_config=None, log_level=args.uvicorn_log_level,
        access_log=args.uvicorn_log_level in ("info", "debug", "trace"),
        timeout_graceful_shutdown=args.shutdown_timeout))
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again to end the process "by" it
    # (exit status 143/130). With these handlers that second delivery is a no-op and we exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    logger.info("serving %s on the %s backend at http://%s:%d/v1 (API docs at /docs, metrics at "
                "/metrics%s)%s", " / ".join(config.served_model_names), engine.engine.backend.name,
                args.host, args.port, ", web demo at /web" if args.web else "",
                "; API keys required" if config.api_keys else "")
    if args.print_examples:
        threading.Thread(target=_print_examples_when_ready, daemon=True,
                         args=(server, args, config.served_model_names[0], bool(config.api_keys))).start()
    server.run()
    logger.info("server stopped")
    return 0


WEB_DEMO_PATH = "/web"


def _mount_web_demo(app, engine, config) -> None:
    from lite.web.app import mount_demo
    from lite.web.engine_source import EngineChatSource

    info = app.state.lite.model_info
    mount_demo(app, EngineChatSource(engine, info), info, "lite serve", WEB_DEMO_PATH,
               api_keys=config.api_keys)


EXAMPLES = """
lite serve is ready. From another terminal:

curl {url}/v1/chat/completions -H 'Content-Type: application/json'{auth_header} \\
  -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "What is the capital of France?"}}]}}'

python - <<'EOF'   # needs `pip install openai`; the .venv of `make demo` has it
import os
from openai import OpenAI
client = OpenAI(base_url="{url}/v1", api_key={api_key})
stream = client.chat.completions.create(model="{model}", stream=True,
    messages=[{{"role": "user", "content": "Write a haiku about the sea."}}])
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
EOF

Ctrl-C (or SIGTERM) stops the server once the requests in flight are done.
"""


def _print_examples_when_ready(server, args, model: str, needs_key: bool) -> None:
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.1)
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(EXAMPLES.format(
        url=f"http://{host}:{args.port}", model=model,
        auth_header=' -H "Authorization: Bearer $LITE_API_KEY"' if needs_key else "",
        api_key='os.environ["LITE_API_KEY"]' if needs_key else '"unused"'), flush=True)

