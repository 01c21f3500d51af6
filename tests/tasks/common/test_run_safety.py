"""Faults injected into a run: a second run into the same dir, a full disk, stale temporary files, corrupt or
foreign checkpoints on --resume, a changed config, a non-finite loss before any checkpoint, loss terms."""
import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from tasks.common import checkpoint
from tasks.common.checkpoint import WriteError
from tasks.common.config import ConfigError
from tasks.common.engine import NonFiniteLoss, fit
from tasks.common.logs import JsonlLog, current_run, main_terms
from tasks.common.runs import RunExistsError
from tests.tasks.common.fake_task import FakeTask, fake_config


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _config(max_iters, **schedule):
    cfg = fake_config(max_iters)
    for key, value in schedule.items():
        setattr(cfg.schedule, key, value)
    return cfg


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_second_run_is_refused_and_restart_keeps_the_first(tmp_path):
    cfg = fake_config(6)
    fit(FakeTask(cfg), cfg, tmp_path)
    first = _snapshot(tmp_path)
    with pytest.raises(RunExistsError, match=r"already holds a run \(last.pth, best.pth, log.jsonl\); continue it with --resume"):
        fit(FakeTask(cfg), cfg, tmp_path)
    assert _snapshot(tmp_path) == first  # nothing was touched

    fit(FakeTask(cfg), cfg, tmp_path, restart=True)
    (archived,) = (tmp_path / "previous").iterdir()
    assert _snapshot(archived) == first  # the first run, byte for byte
    starts = [r for r in JsonlLog(tmp_path / "log.jsonl").read() if r["mode"] == "start"]
    assert len(starts) == 1  # the new log holds only the new run


def test_a_failed_run_without_checkpoint_still_counts_as_a_run(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"mode": "start", "iter": 0}\n')
    with pytest.raises(RunExistsError) as info:
        fit(FakeTask(fake_config(2)), fake_config(2), tmp_path)
    assert "--resume" not in str(info.value) and "--restart" in str(info.value)  # nothing to resume from


def test_failed_write_keeps_the_old_file_and_names_path_and_reason(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    checkpoint.save_atomic({"iteration": 1}, path)

    def partial_then_full(obj, f, *args, **kwargs):
        f.write(b"x" * 1000)
        _no_space()

    monkeypatch.setattr(torch, "save", partial_then_full)
    with pytest.raises(WriteError) as info:
        checkpoint.save_atomic({"iteration": 2}, path)
    monkeypatch.undo()
    assert str(info.value) == f"cannot write {path}: No space left on device (the previous last.pth is kept unchanged)"
    assert info.value.errno == errno.ENOSPC
    assert checkpoint.load(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]  # no temporary file left behind


def test_full_disk_during_a_run_reports_the_checkpoint_not_the_plot(tmp_path, monkeypatch):
    cfg = fake_config(6)
    fit(FakeTask(cfg), cfg, tmp_path)
    before = _snapshot(tmp_path)
    monkeypatch.setattr(torch, "save", _no_space)
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", _no_space)
    cfg = fake_config(9)
    with pytest.raises(WriteError, match=r"cannot write .*(best|last).pth: No space left on device"):
        fit(FakeTask(cfg), cfg, tmp_path, resume=tmp_path / "last.pth")
    monkeypatch.undo()
    after = _snapshot(tmp_path)
    for name in ("last.pth", "best.pth", "curves.png"):
        assert after[name] == before[name], name  # intact, not truncated
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    cfg = fake_config(3)
    fit(FakeTask(cfg), cfg, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".last.pth.tmp{dead.stdout.strip()}"
    live = tmp_path / f".best.pth.tmp{os.getppid()}"  # a running process: its write may be in progress
    stale.write_bytes(b"x" * 4096)
    live.write_bytes(b"y")
    fit(FakeTask(fake_config(4)), fake_config(4), tmp_path, resume=tmp_path / "last.pth")
    assert not stale.exists() and live.exists()


def test_resume_from_a_truncated_checkpoint_names_it(tmp_path):
    cfg = fake_config(3)
    fit(FakeTask(cfg), cfg, tmp_path)
    last = tmp_path / "last.pth"
    last.write_bytes(last.read_bytes()[:200])
    with pytest.raises(ConfigError, match=rf"cannot resume: {last} is not a readable checkpoint \(truncated") as info:
        fit(FakeTask(cfg), cfg, tmp_path, resume=last)
    assert str(info.value).endswith(  # the ways on, in the CLI's own options
        f"; start over with --restart (the old files move to {tmp_path / 'previous'}/), or start from its best weights "
        f"with --work-dir <new dir> --cfg-options model.weights={tmp_path / 'best.pth'}")
    (tmp_path / "best.pth").unlink()
    with pytest.raises(ConfigError) as info:
        fit(FakeTask(cfg), cfg, tmp_path, resume=last)
    assert str(info.value).endswith(f"; start over with --restart (the old files move to {tmp_path / 'previous'}/)")


def test_resume_from_best_pth_says_weights_only(tmp_path):
    cfg = fake_config(4)
    fit(FakeTask(cfg), cfg, tmp_path)
    with pytest.raises(ConfigError, match=r"best.pth: it holds model weights only \(no optimizer, scheduler, scaler, "
                                          r"iteration, rng\), like best.pth; resume from a last.pth"):
        fit(FakeTask(cfg), cfg, tmp_path, resume=tmp_path / "best.pth")


def test_resume_with_a_changed_model_says_what_differs(tmp_path):
    cfg = fake_config(3)
    fit(FakeTask(cfg), cfg, tmp_path)
    cfg.model.width = 16
    with pytest.raises(ConfigError) as info:
        fit(FakeTask(cfg), cfg, tmp_path, resume=tmp_path / "last.pth")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"cannot resume from {tmp_path / 'last.pth'}: the model differs")
    assert "config: model.width: 8 -> 16" in message
    assert "body.0.weight [8, 3, 3, 3] in the checkpoint, [16, 3, 3, 3] now" in message


def test_resume_with_other_optimizer_groups_names_the_optimizer(tmp_path):
    cfg = fake_config(3)
    fit(FakeTask(cfg), cfg, tmp_path)
    cfg.optimizer.lr_mults = {}  # one parameter group fewer
    with pytest.raises(ConfigError, match=r"its optimizer state does not fit this run .*config changes: optimizer.lr_mults"):
        fit(FakeTask(cfg), cfg, tmp_path, resume=tmp_path / "last.pth")


def test_non_finite_loss_before_any_checkpoint_says_none_was_saved(tmp_path):
    cfg = fake_config(12)
    cfg.model.nan_at = 1  # iteration 2; the first checkpoint would be at 3
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at iteration 2 \(loss nan, loss_mse nan\); no checkpoint was saved"):
        fit(FakeTask(cfg), cfg, tmp_path)
    assert not (tmp_path / "last.pth").exists()


def test_non_finite_loss_is_found_between_log_records(tmp_path):
    cfg = _config(12, log_interval=5, checkpoint_interval=5, eval_interval=100)
    cfg.model.nan_at = 6  # iteration 7: read at iteration 10, the next log / checkpoint
    with pytest.raises(NonFiniteLoss, match=rf"iteration 7 .*the last good checkpoint is {tmp_path / 'last.pth'} \(iteration 5\)"):
        fit(FakeTask(cfg), cfg, tmp_path)
    assert checkpoint.load(tmp_path / "last.pth")["iteration"] == 5  # never overwritten with NaN weights


class _TermsTask(FakeTask):
    """Two weighted terms, a logged statistic and the weighted total, as Deformable-DETR reports them."""

    def loss(self, model, batch, device):
        x, y = (t.to(device) for t in batch)
        pred = model(x)
        terms = {"loss_mse": ((pred - y) ** 2).mean(), "loss_l1": (pred - y).abs().mean(), "loss_l1_0": pred.abs().mean()}
        return {"loss": 2 * terms["loss_mse"] + 5 * terms["loss_l1"], **terms, "count_error": torch.tensor(3.0)}


def test_every_loss_term_is_logged_and_the_total_is_the_weighted_sum(tmp_path):
    cfg = fake_config(4)
    fit(_TermsTask(cfg), cfg, tmp_path)
    train = [r for r in JsonlLog(tmp_path / "log.jsonl").read() if r["mode"] == "train"]
    assert {"loss", "loss_mse", "loss_l1", "loss_l1_0", "count_error", "lr"} <= set(train[0])
    for r in train:  # log_interval 1: each record is one step
        assert r["loss"] == pytest.approx(2 * r["loss_mse"] + 5 * r["loss_l1"], rel=1e-5)
        assert r["count_error"] == 3.0
    assert main_terms(train[0]) == ["loss_mse", "loss_l1"]  # the auxiliary copy is not shown


def test_main_terms_and_resumed_logs():
    terms = ["loss", "loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_bbox_enc", "loss_x", "cardinality_error"]
    assert main_terms(terms) == ["loss_ce", "loss_bbox", "loss_giou"]
    assert main_terms(["loss", "loss_ce"]) == []  # a single term equals the total
    records = [{"mode": "start", "iter": 0}, *({"mode": "train", "iter": i} for i in (1, 2, 3, 4)),
               {"mode": "start", "iter": 2}, {"mode": "train", "iter": 3}]
    assert [r["iter"] for r in current_run(records) if r["mode"] == "train"] == [1, 2, 3]


def test_a_log_line_cut_by_a_kill_is_skipped(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"mode": "start", "iter": 0}\n{"mode": "train", "it')
    assert JsonlLog(log).read() == [{"mode": "start", "iter": 0}]


def test_task_validation_names_the_config_key(tmp_path):
    class Small(FakeTask):
        def validate(self, model):
            raise ValueError("data.crop=16: tiny needs inputs of at least 32 px per side")

    with pytest.raises(ConfigError, match="data.crop=16"):
        fit(Small(fake_config(2)), fake_config(2), tmp_path)
    assert not (tmp_path / "log.jsonl").exists()


def test_engine_reads_the_device_only_at_log_eval_and_save_steps(tmp_path, monkeypatch):
    from tasks.common import logs

    reads = []
    original = logs.LossMeter.read
    monkeypatch.setattr(logs.LossMeter, "read", lambda self: reads.append(self.count) or original(self))
    cfg = _config(12, log_interval=4, checkpoint_interval=6, eval_interval=12)
    fit(FakeTask(cfg), cfg, tmp_path)
    assert len(reads) == 5  # iterations 1 (first record), 4, 6 (save), 8, 12 (log + eval + save) — not 12
    records = [r for r in JsonlLog(tmp_path / "log.jsonl").read() if r["mode"] == "train"]
    assert [r["iter"] for r in records] == [1, 4, 8, 12]
    assert json.loads((tmp_path / "metrics.json").read_text())["iteration"] == 12
