"""The CUDA backend on a machine without a GPU: it registers, explains itself, and imports no triton."""
import subprocess
import sys

from lite.backends import availability

BLOCK_TRITON = "import sys; sys.modules['triton'] = None; "  # any `import triton` now fails


def test_cuda_backend_says_why_it_is_not_usable():
    assert not availability("cuda").ok
    assert availability("cuda").reason == "no CUDA device visible to PyTorch"


def test_probing_the_cuda_backend_imports_no_triton():
    code = ("import sys, lite; from lite.backends import availability; availability('cuda'); "
            "assert 'triton' not in sys.modules, 'probing imported triton'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lite_env_runs_without_triton():
    code = BLOCK_TRITON + "from lite.cli import main; sys.argv = ['lite', 'env']; sys.exit(main())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "cuda" in out and "cpu" in out
