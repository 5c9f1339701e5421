"""bench/provenance.py: every results file carries the provenance of the run that wrote it."""
from __future__ import annotations

import json

from bench.provenance import Run, headline


def test_a_merged_results_file_gets_this_runs_provenance(tmp_path):
    """bench/denoise.py merges into its previous file: the old date, commit and headline must not survive."""
    stale = {"date": "2000-01-01 00:00", "commit": "0" * 12, "wall_seconds": 1e9, "headline": [], "runs": {"a": 1}}
    row = headline("figure", 2.0, "peer", 1.0, "x/s")
    written = Run("bench/example.py").write(tmp_path / "example.json", stale, [row])
    on_disk = json.loads((tmp_path / "example.json").read_text())
    assert on_disk == json.loads(json.dumps(written))
    assert on_disk["date"] != stale["date"] and on_disk["commit"] != stale["commit"]
    assert on_disk["wall_seconds"] < 60 and on_disk["headline"] == [row] and on_disk["runs"] == {"a": 1}
