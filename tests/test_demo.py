"""`align demo`: stages dispatch to the domains' demo stages, a stage that cannot run is skipped with its reason."""
from __future__ import annotations

import json

from align import demo


class DemoDomain:
    def demo_stages(self):
        return {"fake": self.fake}

    def fake(self, output_dir):
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "report.md").write_text("# demo\n")
        return {"pass@1": 0.5, "nested": {"not": "flat"}}


class NoDemoDomain:
    pass


def test_stages_run_skip_and_write_the_overview(tmp_path, monkeypatch, capsys):
    domains = {"fake": DemoDomain(), "plain": NoDemoDomain()}
    monkeypatch.setattr(demo, "available_domains", lambda: list(domains))
    monkeypatch.setattr(demo, "get_domain", lambda name: domains[name])
    overview = demo.run(demo.Config(output_dir=str(tmp_path), stages=["fake", "plain", "nope"]))
    assert overview["fake"]["status"] == "done" and overview["fake"]["pass@1"] == 0.5
    assert overview["fake"]["report"] == str(tmp_path / "fake" / "report.md") and "nested" not in overview["fake"]
    assert overview["plain"]["status"] == "skipped" and "unknown stage 'plain'" in overview["plain"]["reason"]
    assert overview["nope"]["status"] == "skipped" and "known: rm, strength, fake" in overview["nope"]["reason"]
    assert json.loads((tmp_path / "overview.json").read_text()) == overview
    table = (tmp_path / "overview.md").read_text().splitlines()
    assert [row.split("|")[1].strip() for row in table if row.startswith("| ") and "---" not in row][1:] == [
        "fake", "plain", "nope"]  # one row per stage, in order, below the header
    assert "[report.md](fake/report.md)" in (tmp_path / "overview.md").read_text()
    assert str(tmp_path / "fake" / "report.md") in capsys.readouterr().out


def test_the_shipped_domains_offer_a_demo_stage():
    from align.types import HasDemo
    from domains.code import CodeDomain
    from domains.translation import TranslationDomain

    assert isinstance(TranslationDomain(), HasDemo) and set(TranslationDomain().demo_stages()) == {"translation"}
    assert isinstance(CodeDomain(), HasDemo) and set(CodeDomain().demo_stages()) == {"code", "ppo"}
