"""piip_llava/eval/submit.py"""

import json

from openpyxl import load_workbook

from piip_llava.cli import main


def test_submission_files(tmp_path):
    tsv = tmp_path / "mmbench.tsv"
    header = ["index", "question", "hint", "A", "B", "answer", "category", "source", "l2-category", "comment", "image"]
    tsv.write_text(
        "\t".join(header) + "\n" + "\t".join(["3", "Q?", "h", "x", "y", "A", "c", "s", "l", "", "aGk="]) + "\n"
    )
    answers = tmp_path / "mmbench.jsonl"
    records = [{"question_id": 3, "round_id": r, "prompt": "Q?", "text": t, "options": ["x", "y"][r:] + ["x", "y"][:r],
                "metadata": {}} for r, t in enumerate(["B", "A"])]  # fmt: skip
    answers.write_text("\n".join(json.dumps(record) for record in records))
    assert main(["eval", "submit", "--format", "mmbench", "--predictions", str(answers), "--questions", str(tsv),
                 "--output", str(tmp_path / "upload.xlsx")]) == 0  # fmt: skip
    rows = list(load_workbook(tmp_path / "upload.xlsx").active.values)
    assert rows[0] == ("index", "question", "A", "B", "answer", "prediction") and rows[1][-1] == "B"

    questions = tmp_path / "vqav2.jsonl"
    questions.write_text("\n".join(json.dumps({"question_id": i}) for i in (1, 2)))
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps({"question_id": 1, "text": "Two."}))
    main(["eval", "submit", "--format", "vqav2", "--predictions", str(predictions), "--questions", str(questions),
          "--output", str(tmp_path / "vqav2.json")])  # fmt: skip
    assert json.loads((tmp_path / "vqav2.json").read_text()) == [{"question_id": 1, "answer": "2"},
                                                                  {"question_id": 2, "answer": ""}]  # fmt: skip
    main(["eval", "submit", "--format", "gqa", "--predictions", str(predictions), "--output", str(tmp_path / "g.json")])
    assert json.loads((tmp_path / "g.json").read_text()) == [{"questionId": "1", "prediction": "two"}]
