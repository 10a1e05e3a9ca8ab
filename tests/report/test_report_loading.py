"""The report reads a run through rundir and lists each damaged file as a warning."""
from __future__ import annotations

from sparsecircuits.report.loading import load_run_data
from sparsecircuits.rundir import RunDir


def test_damaged_files_become_warnings_and_the_rest_still_loads(run_dir):
    rd = RunDir(run_dir)
    rd.tasks.write_text("{damaged")
    rd.eval.write_text("[1, 2]")
    (rd.circuits / "broken").mkdir()
    (rd.circuits / "broken" / "circuit.json").write_text("{")
    rd.control("nonsense_name_when").parent.mkdir(parents=True)
    rd.control("nonsense_name_when").write_text(rd.circuit("single_double_quote").read_text())

    data = load_run_data(run_dir)
    assert data.tasks == {} and data.measures == {}
    assert [c.dirname for c in data.circuits] == ["bracket_counting", "broken", "single_double_quote"]
    assert data.circuits[1].data is None and data.circuits[0].data is not None
    text = "\n".join(data.warnings)
    assert str(rd.tasks) in text and str(rd.eval) in text and "circuits/broken/circuit.json" in text
    assert "skipped 1 unreadable line" in text  # the fixture's torn metrics line
    assert len(data.metrics) == 101
