"""``eco-guard generate``: JSONL in, JSONL out, per-row errors; the vLLM rows equal the transformers rows."""

from __future__ import annotations

import json

import pytest

from eco_guard.cli import main
from eco_guard.cli.generate import HFRunner, read_rows, serve_rows

ROWS = [
    {"text": "What is the capital of France?", "id": "a"},
    {"text": "What is the capital of France?", "flag": True, "id": "b"},
    {"messages": [{"role": "user", "content": "Who wrote the play Romeo and Juliet?"}], "flag": False},
    {"text": "Describe this picture.", "image": "cat.png"},
    {"text": ""},
    {"text": "What is the chemical symbol for gold?", "flag": "yes"},
]


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n{not json\n")
    return path


def check_rows(rows):
    assert len(rows) == len(ROWS) + 1
    assert [r.get("error") is None for r in rows] == [True, True, True, False, False, False, False]
    assert rows[0]["id"] == "a" and "Paris" in rows[0]["output"] and rows[0]["flagged"] is False
    assert rows[1]["flagged"] is True and "Paris" not in rows[1]["output"]
    assert "Shakespeare" in rows[2]["output"]
    assert "text-only" in rows[3]["error"] and rows[3]["output"] is None
    assert "empty" in rows[4]["error"] and "'flag'" in rows[5]["error"] and "JSON" in rows[6]["error"]


@pytest.mark.slow
def test_generate_with_transformers_end_to_end(prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    code = main(
        [
            "generate",
            "--backend",
            "hf",
            "--prompts",
            str(prompts_file),
            "--out",
            str(out),
            "--max-new-tokens",
            "16",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    check_rows(rows)
    assert rows[3]["image"] == str(prompts_file.parent / "cat.png")  # relative to the input file


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_rows_equal_transformers_rows(prompts_file, guarded_llm, smollm2):
    from eco_guard.guard import EcoGuard

    rows = read_rows(prompts_file)
    ours = serve_rows(guarded_llm, rows, chat_template=None, max_new_tokens=16)
    check_rows(ours)
    theirs = serve_rows(
        HFRunner(EcoGuard(*smollm2), batch_size=1), rows, chat_template=None, max_new_tokens=16
    )
    assert [r["output"] for r in ours] == [r["output"] for r in theirs]


def test_missing_prompts_file_is_a_clear_error(tmp_path, capsys):
    code = main(["generate", "--prompts", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    assert code == 2 and "prompts file not found" in capsys.readouterr().err
