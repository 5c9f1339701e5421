import json

from align.training.rundir import RunDir


def test_metrics_summary_and_truncation(tmp_path):
    run = RunDir(tmp_path / "run")
    for step in (1, 2, 3):
        run.log(step, loss=1.0 / step, bad=float("nan"))
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3]
    assert run.read_metrics()[0]["bad"] is None  # JSON has no NaN
    run.truncate_metrics_after(2)
    assert [r["step"] for r in run.read_metrics()] == [1, 2]
    run.write_summary({"eval_accuracy": 0.75, "inf": float("inf")})
    assert json.loads(run.summary_path.read_text()) == {"eval_accuracy": 0.75, "inf": None}


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    run = RunDir(tmp_path / "run", keep_checkpoints=2)
    for step in (10, 20, 30):
        run.save_checkpoint(step, lambda d, size=step: (d / "weights.bin").write_bytes(b"x" * size))
    assert [p.name for p in run.checkpoints()] == ["step-20", "step-30"]
    assert run.latest_checkpoint().name == "step-30"

    def crash(directory):
        (directory / "partial").write_text("half")
        raise RuntimeError("killed mid-write")

    try:
        run.save_checkpoint(40, crash)
    except RuntimeError:
        pass
    # a half-written checkpoint is never taken for a whole one
    assert run.latest_checkpoint().name == "step-30"
