"""End to end: an audit whose teacher answers no better than guessing says so first, in every place a person reads
(the command's output, summary.md, report.html), and recommends no student."""

from typer.testing import CliRunner

from kdlens.cli import app
from tests.reliability.runs import classifier_audit


def test_an_untrained_teacher_is_no_reference_wherever_the_audit_speaks(tmp_path):
    import yaml

    config = classifier_audit(tmp_path)  # random tiny CNNs on 3 classes: the floor is 1/3 + 25 points
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["audit", str(tmp_path / "audit.yaml"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "it is no reference on these examples" in " ".join(result.output.split())
    run = tmp_path / "run"
    summary = (run / "summary.md").read_text().splitlines()
    assert summary[2].startswith("**The teacher answers ") and "below the 58.3% a reference needs" in summary[2]
    assert summary[4].startswith("**No student chosen: the teacher answers")
    html = (run / "report.html").read_text()
    assert html.index("it is no reference on these examples") < html.index('class="verdicts"')
    import json

    results = json.loads((run / "results.json").read_text())
    assert results["teacher"]["chance"] == 1 / 3 and results["scorecard"]["chosen"] is None
    assert all(s["verdict"] in ("unrated", "rejected") for s in results["students"].values())
