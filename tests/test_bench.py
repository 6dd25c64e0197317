"""`lite bench`: a smoke run on the real model, and its pure parts (workload, table, markdown file).

No timing assertions: numbers depend on the machine and whatever else runs on it.
"""
import pytest

from lite.bench import ROW_LABELS, Workload, build_table, mixed_requests, section_key, write_section
from lite.cli import main


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table body rows as {label: [lite, transformers, ratio]}, header and rule skipped."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] != "benchmark" and not cells[1].startswith("-"):
            rows[cells[0]] = cells[1:]
    return rows


def row_for(rows: dict[str, list[str]], key: str) -> list[str]:
    matches = [cells for label, cells in rows.items() if label.startswith(ROW_LABELS[key])]
    assert len(matches) == 1, f"expected one {key!r} row in {list(rows)}"
    return matches[0]


@pytest.mark.slow
def test_quick_lite_only_run_prints_every_row_and_writes_the_file(smollm2_dir, tmp_path, capsys):
    output = tmp_path / "benchmarks.md"
    assert main(["bench", str(smollm2_dir), "--quick", "--skip-hf", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    rows = table_rows(printed)
    assert len(rows) == len(ROW_LABELS)
    for key in ROW_LABELS:
        lite, transformers, ratio = row_for(rows, key)
        assert float(lite.replace(",", "")) > 0, key
        assert (transformers, ratio) == ("skipped", "—"), key
    written = output.read_text()
    assert written.startswith("# Benchmarks")
    assert table_rows(written) == rows
    for fact in ("- command: `", "- date: ", "- machine: ", "torch ", "transformers ", "torch threads "):
        assert fact in written, fact


def test_mixed_requests_keep_lengths_across_repeats_but_not_token_ids():
    work = Workload(num_requests=32, seed=3)
    first, second = mixed_requests(work, 1000, repeat=0), mixed_requests(work, 1000, repeat=1)
    assert [(len(p), n) for p, n in first] == [(len(p), n) for p, n in second]
    assert all(work.min_prompt_tokens <= len(p) <= work.max_prompt_tokens for p, _ in first)
    assert all(work.min_output_tokens <= n <= work.max_output_tokens for _, n in first)
    assert all(0 <= t < 1000 for p, _ in first for t in p)
    # Fresh ids per repeat keep the prefix cache from serving a repeat out of the last one.
    assert [p[:8] for p, _ in first] != [p[:8] for p, _ in second]
    assert mixed_requests(work, 1000, repeat=0) == first  # deterministic: both sides see the same


def test_workload_rejects_settings_it_cannot_time():
    with pytest.raises(ValueError, match="at least 2 new tokens"):
        Workload(decode_new_tokens=1)
    with pytest.raises(ValueError, match="min <= max"):
        Workload(min_prompt_tokens=300, max_prompt_tokens=256)


def fake_result(rate: float, mixed: dict[str, list[float]]) -> dict:
    return {"decode": [rate, 3 * rate, 2 * rate], "prefill": [10 * rate] * 3, "mixed": mixed,
            "peak_rss_bytes": 512 * 2**20}


def test_table_compares_medians_against_the_fastest_transformers_batch_size():
    lite = fake_result(20.0, {"continuous": [100.0, 100.0, 100.0]})
    hf = fake_result(10.0, {"batches of 8": [50.0] * 3, "batches of 32": [80.0] * 3})
    rows = table_rows(build_table(Workload(), lite, hf))
    assert row_for(rows, "decode") == ["40.0", "20.0", "2.00x"]  # medians, not means or firsts
    assert row_for(rows, "mixed") == ["100.0", "80.0", "1.25x"]
    assert "transformers batches of 32" in next(label for label in rows if label.startswith(ROW_LABELS["mixed"]))
    assert row_for(rows, "rss") == ["512.0", "512.0", "1.00x"]


def test_write_section_replaces_its_own_section_and_keeps_the_others(tmp_path):
    path = tmp_path / "docs" / "benchmarks.md"
    write_section(path, "a", "first run of a\n")
    write_section(path, "b", "run of b\n")
    write_section(path, "a", "second run of a\n")
    text = path.read_text()
    assert "first run of a" not in text
    assert text.count("second run of a") == 1 and text.count("run of b") == 1
    assert text.index("second run of a") < text.index("run of b")  # replaced in place


def test_section_key_separates_machines_threads_and_smoke_runs():
    key = section_key("HuggingFaceTB/SmolLM2-135M-Instruct", "Intel(R) Xeon(R) Processor", 2, quick=False)
    assert key == "smollm2-135m-instruct-intel-r-xeon-r-processor-2t"
    assert section_key("m", "cpu", 4, quick=False) != section_key("m", "cpu", 2, quick=False)
    assert section_key("m", "cpu", 2, quick=True).endswith("-quick")
