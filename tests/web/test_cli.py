"""`lite gradio` and `lite serve --web` as commands: flags explained, Gradio optional."""
import subprocess
import sys

import pytest

from lite.cli import build_parser, main
from servers import free_port

WITHOUT_GRADIO = "import sys; sys.modules['gradio'] = None  # as if not installed\n"


def subcommand(name: str):
    return next(a for a in build_parser()._actions if a.dest == "command").choices[name]


def test_every_gradio_flag_has_help():
    parser = subcommand("gradio")
    assert "OpenAI-compatible" in parser.description and "lite-deploy[web]" in parser.description
    for action in parser._actions:
        assert action.help and len(action.help) > 10, f"{action.option_strings or action.dest} has no help"


def test_serve_web_flag_says_where_the_page_is():
    web = next(a for a in subcommand("serve")._actions if a.dest == "web")
    assert "/web" in web.help and "lite-deploy[web]" in web.help


@pytest.mark.parametrize("argv", [["gradio"], ["gradio", "--api-url", "http://127.0.0.1:9/v1"],
                                  ["serve", "--web"]])
def test_without_gradio_the_command_says_how_to_install_it(argv, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    assert main(argv) == 2
    assert "pip install 'lite-deploy[web]'" in capsys.readouterr().err


def test_lite_imports_and_parses_without_gradio():
    code = WITHOUT_GRADIO + ("import lite, lite.web.chat, lite.web.openai_source\n"
                             "from lite.cli import build_parser\n"
                             "build_parser().parse_args(['gradio', '--api-url', 'http://x/v1'])\n"
                             "assert 'gradio' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_an_unreachable_api_url_is_an_error_line_not_a_trace(capsys):
    assert main(["gradio", "--api-url", f"http://127.0.0.1:{free_port()}/v1"]) == 2
    assert "Cannot reach the server at http://127.0.0.1:" in capsys.readouterr().err
