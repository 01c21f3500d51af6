"""Faults met after training started: a validation sample that cannot be read, a disk that fills up (a real
small tmpfs where the machine lets us mount one, a simulated one otherwise), an evaluation into a busy work dir."""
import errno
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tasks.common import checkpoint
from tasks.common.checkpoint import WriteError
from tasks.common.engine import evaluate_checkpoint, fit
from tasks.common.logs import JsonlLog
from tasks.common.runs import WorkDirBusy, claim_work_dir
from tasks.common.samples import DataError
from tests.tasks.common.fake_task import FakeTask, fake_config


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_bad_validation_sample_saves_the_iteration_and_resume_evaluates_it_first(tmp_path):
    bad = tmp_path / "mask_0003.png"
    bad.write_text("bad")
    cfg = fake_config(12)
    cfg.data.bad_val_file, cfg.data.num_workers = str(bad), 2  # read in a worker process, as a real run does
    with pytest.raises(DataError) as info:
        fit(FakeTask(cfg), cfg, tmp_path / "run")
    last = tmp_path / "run" / "last.pth"
    assert str(info.value) == (
        f"iteration 4: the evaluation stopped: a validation sample cannot be read: mask file {bad} holds label 7, "
        f"outside the classes 0-3; the state after iteration 4 is saved in {last}: fix the file, then continue with "
        "--resume (it evaluates first)")
    state = checkpoint.load(last)
    assert state["iteration"] == 4 and state["evaluate_first"] is True  # the evaluation came before iteration 5
    bad.write_text("fixed")
    assert fit(FakeTask(cfg), cfg, tmp_path / "run", resume=last)["iteration"] == 12

    straight = fake_config(12)
    fit(FakeTask(straight), straight, tmp_path / "straight")
    for name in ("last.pth", "best.pth"):
        a, b = (checkpoint.load(tmp_path / d / name) for d in ("run", "straight"))
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name  # nothing changed
        assert a["best"] == b["best"]
    evals = [r for r in JsonlLog(tmp_path / "run" / "log.jsonl").read() if r["mode"] == "val"]
    assert [r["iter"] for r in evals] == [4, 8, 12]


def test_evaluate_checkpoint_names_the_bad_validation_sample(tmp_path):
    cfg = fake_config(3)
    fit(FakeTask(cfg), cfg, tmp_path / "run")
    bad = tmp_path / "mask_0003.png"
    bad.write_text("bad")
    cfg.data.bad_val_file, cfg.data.num_workers = str(bad), 1
    with pytest.raises(DataError, match=rf"^a validation sample cannot be read: mask file {bad} holds label 7"):
        evaluate_checkpoint(FakeTask(cfg), cfg, tmp_path / "run" / "best.pth", tmp_path / "test")
    assert not (tmp_path / "test" / "test_metrics.json").exists()


def _torch_like_full_disk(obj, f, *args, **kwargs):
    """What torch.save raises when the file object's write fails: a RuntimeError whose context is the OSError."""
    f.write(b"x" * 100)
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None


@pytest.mark.parametrize("error", ["context", "message", "bug"])
def test_torch_save_runtime_errors_are_write_errors_and_bugs_are_not(tmp_path, monkeypatch, error):
    path = tmp_path / "last.pth"
    checkpoint.save_atomic({"iteration": 1}, path)

    def raising(obj, f, *args, **kwargs):
        f.write(b"x" * 100)
        raise RuntimeError({"message": "PytorchStreamWriter failed writing file data/0: file write failed",
                            "bug": "something else"}[error])

    monkeypatch.setattr(torch, "save", _torch_like_full_disk if error == "context" else raising)
    with pytest.raises(WriteError if error != "bug" else RuntimeError) as info:
        checkpoint.save_atomic({"iteration": 2}, path)
    monkeypatch.undo()
    reason = {"context": "No space left on device", "message": "PytorchStreamWriter failed writing file data/0: file "
              "write failed", "bug": None}[error]
    if reason is not None:
        assert str(info.value) == f"cannot write {path}: {reason} (the previous last.pth is kept unchanged)"
    else:
        assert not isinstance(info.value, WriteError)
    assert checkpoint.load(path)["iteration"] == 1 and os.listdir(tmp_path) == ["last.pth"]


def test_a_checkpoint_that_does_not_fit_names_it_and_the_last_good_one(tmp_path, monkeypatch):
    cfg = fake_config(6)
    fit(FakeTask(cfg), cfg, tmp_path)
    before = _snapshot(tmp_path)
    monkeypatch.setattr(torch, "save", _torch_like_full_disk)
    cfg = fake_config(9)
    with pytest.raises(WriteError) as info:
        fit(FakeTask(cfg), cfg, tmp_path, resume=tmp_path / "last.pth")
    monkeypatch.undo()
    assert str(info.value) == (f"cannot write {tmp_path / 'best.pth'}: No space left on device (the previous best.pth "
                               f"is kept unchanged; the last good checkpoint is {tmp_path / 'last.pth'} (iteration 6))")
    after = _snapshot(tmp_path)
    assert after["last.pth"] == before["last.pth"] and after["best.pth"] == before["best.pth"]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs (a disk that really fills up); skipped where mounting is not allowed (not root, a container)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _fill(folder, leave: int):
    """Fill ``folder``'s file system until ``leave`` bytes are free."""
    stat = os.statvfs(folder)
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))


def test_a_real_full_disk_stops_the_run_and_resume_continues_once_there_is_room(small_fs):
    cfg = fake_config(6)
    cfg.model.width = 512  # last.pth about 190 kB, best.pth about 65 kB
    fit(FakeTask(cfg), cfg, small_fs)
    before = _snapshot(small_fs)
    _fill(small_fs, 40_000)  # room for config.json and the log, not for a checkpoint
    longer = fake_config(12)
    longer.model.width = 512
    with pytest.raises(WriteError) as info:
        fit(FakeTask(longer), longer, small_fs, resume=small_fs / "last.pth")
    message = str(info.value)
    assert message.startswith(f"cannot write {small_fs}/") and ".pth: No space left on device (the previous " in message
    assert message.endswith(f"the last good checkpoint is {small_fs / 'last.pth'} (iteration 6))")
    after = _snapshot(small_fs)
    assert all(after[name] == before[name] for name in ("last.pth", "best.pth"))
    assert not [p for p in small_fs.iterdir() if ".tmp" in p.name]  # no partial file keeps the disk full
    (small_fs / "filler").unlink()
    assert fit(FakeTask(longer), longer, small_fs, resume=small_fs / "last.pth")["iteration"] == 12


class _SlowEval(FakeTask):
    def evaluate(self, model, loader, device):
        time.sleep(1.0)  # long enough for the other process to meet the lock
        return super().evaluate(model, loader, device)


def _evaluate_at(work_dir, checkpoint_path, barrier, results):
    cfg = fake_config(3)
    barrier.wait()
    try:
        evaluate_checkpoint(_SlowEval(cfg), cfg, checkpoint_path, work_dir)
        results.put(("ran", os.getpid()))
    except WorkDirBusy as e:
        results.put(("refused", str(e)))


def test_two_evaluations_into_one_work_dir_one_runs_the_other_is_refused(tmp_path):
    cfg = fake_config(3)
    fit(FakeTask(cfg), cfg, tmp_path / "run")
    ctx = multiprocessing.get_context("spawn")  # a child forked after torch computed may hang in OpenMP
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_evaluate_at, args=(tmp_path / "test", tmp_path / "run" / "best.pth", barrier, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    assert [o[0] for o in outcomes] == ["ran", "refused"], outcomes
    assert f"is in use by another run (pid {outcomes[0][1]} on host " in outcomes[1][1]
    assert outcomes[1][1].count(", evaluation)") == 1 and "\n" not in outcomes[1][1]
    assert (tmp_path / "test" / "test_metrics.json").is_file()


def test_an_evaluation_into_a_live_trainings_work_dir_is_refused(tmp_path):
    cfg = fake_config(3)
    fit(FakeTask(cfg), cfg, tmp_path)
    before = _snapshot(tmp_path)
    with claim_work_dir(tmp_path):  # as a live training holds it
        with pytest.raises(WorkDirBusy, match=rf"pid {os.getpid()} on host .*, training\)"):
            evaluate_checkpoint(FakeTask(cfg), cfg, tmp_path / "best.pth", tmp_path)
        assert {k: v for k, v in _snapshot(tmp_path).items() if k != ".lock"} == before  # nothing written


ROOT = Path(__file__).resolve().parents[3]
TOY = ROOT / "configs" / "segformer_pvt_b0_toy.py"


def _test_tool(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "test.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_cli_evaluation_into_a_busy_work_dir_is_one_line(tmp_path):
    with claim_work_dir(tmp_path / "test"):  # as a live training holds it; refused before the checkpoint is read
        busy = _test_tool(TOY, tmp_path / "any.pth", "--work-dir", tmp_path / "test")
    assert busy.returncode == 2 and busy.stderr == (
        f"error: {tmp_path / 'test'} is in use by another run (pid {os.getpid()} on host {socket.gethostname()}, "
        "training); wait for it to end, stop it, or choose another --work-dir\n")


@pytest.mark.slow
def test_cli_evaluation_of_a_bad_validation_sample_is_one_line(tmp_path):
    import cv2

    from tasks.common.cli import config_and_task
    from tasks.segmentation.toy import ensure_toy_dataset

    options = [f"data.root={tmp_path / 'data'}", "data.num_train=2", "data.num_val=2", "data.size=(64, 64)",
               "data.crop=64", "data.scale=(128, 64)", "data.test_scale=(256, 64)", "data.batch_size=2",
               "data.num_workers=1", "schedule.max_iters=1", "schedule.warmup_iters=0", "model.backbone_weights=None"]
    ensure_toy_dataset(tmp_path / "data", num_train=2, num_val=2, size=(64, 64), seed=0)
    cfg, task = config_and_task(str(TOY), options)
    fit(task, cfg, tmp_path / "run")
    mask = sorted((tmp_path / "data").rglob("annotations/validation/*.png"))[1]
    labels = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
    labels[0, 0] = 200  # toy masks hold 0..4
    cv2.imwrite(str(mask), labels)
    bad = _test_tool(TOY, tmp_path / "run" / "best.pth", "--work-dir", tmp_path / "test", "--cfg-options", *options)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert bad.stderr.startswith("error: a validation sample cannot be read: ") and str(mask) in bad.stderr
    assert len(bad.stderr) < 300 and not (tmp_path / "test" / "test_metrics.json").exists()
