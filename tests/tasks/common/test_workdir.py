"""One run per work dir (a lock taken before anything else), work dirs that cannot be written, and a training
sample that cannot be read: each is one message, and nothing of another run is touched."""
import errno
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.common import checkpoint
from tasks.common.checkpoint import WriteError
from tasks.common.engine import fit
from tasks.common.logs import JsonlLog
from tasks.common.runs import LOCK_FILE, WorkDirBusy, claim_work_dir
from tasks.common.samples import DataError
from tests.tasks.common.fake_task import FakeTask, fake_config

SCRIPT = Path(__file__).with_name("fake_task.py")
ROOT = Path(__file__).resolve().parents[3]


def _claim_at(work_dir, barrier, results):
    barrier.wait()
    try:
        with claim_work_dir(work_dir):
            results.put(("ran", os.getpid()))
            time.sleep(0.3)
    except WorkDirBusy as e:
        results.put(("refused", str(e)))


def test_two_claims_at_the_same_instant_one_wins(tmp_path):
    """50 tries, two processes released by one barrier: exactly one holds the dir, the other names it."""
    ctx = multiprocessing.get_context("fork")
    for attempt in range(50):
        work_dir = tmp_path / str(attempt)
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_claim_at, args=(work_dir, barrier, results)) for _ in range(2)]
        for p in procs:
            p.start()
        outcomes = sorted(results.get(timeout=30) for _ in procs)
        for p in procs:
            p.join(30)
        assert [o[0] for o in outcomes] == ["ran", "refused"], (attempt, outcomes)
        winner = outcomes[0][1]
        assert f"is in use by another run (pid {winner} on host " in outcomes[1][1]
        assert not (work_dir / LOCK_FILE).exists()  # released: the folder is left as the run found it


def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path):
    (tmp_path / LOCK_FILE).write_text("pid 999999 on host elsewhere\n")  # no process holds it any more
    cfg = fake_config(2)
    assert fit(FakeTask(cfg), cfg, tmp_path)["iteration"] == 2
    with claim_work_dir(tmp_path) as lock:
        assert lock.path.read_text().startswith(f"pid {os.getpid()} on host ")
        with pytest.raises(WorkDirBusy, match=f"pid {os.getpid()}"):
            claim_work_dir(tmp_path)  # a second claim, even from this process, is refused


def _start_together(work_dir, *args, tries_apart=0.0):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "START_AT": str(time.time() + 8)}
    cmd = [sys.executable, str(SCRIPT), str(work_dir), *args]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    return [(p.wait(timeout=300), p.communicate()[1]) for p in procs]


@pytest.mark.parametrize("tries", [pytest.param(2), pytest.param(20, marks=pytest.mark.slow)])
def test_two_trainings_started_together_one_runs_the_other_is_refused(tmp_path, tries):
    for attempt in range(tries):
        work_dir = tmp_path / str(attempt)
        args = ("6", "model.sleep=0.05") + (("--resume",) if attempt % 2 else ())
        if attempt % 2:  # half the tries race two --resume runs of an existing run
            assert fit(FakeTask(fake_config(3)), fake_config(3), work_dir)["iteration"] == 3
        outcomes = sorted(_start_together(work_dir, *args), key=lambda o: o[0])
        (ok, ok_err), (refused, refused_err) = outcomes
        assert ok == 0, ok_err[-2000:]
        assert refused == 2 and refused_err.count("\n") == 1 and "Traceback" not in refused_err, refused_err
        assert refused_err.startswith(f"error: {work_dir} is in use by another run (pid ")
        starts = [r for r in JsonlLog(work_dir / "log.jsonl").read() if r["mode"] == "start"]
        assert [r["iter"] for r in starts] == ([0, 3] if attempt % 2 else [0])  # one run's log, nothing mixed in
        assert checkpoint.load(work_dir / "last.pth")["iteration"] == 6
        assert not (work_dir / "previous").exists() and not (work_dir / LOCK_FILE).exists()


@pytest.mark.parametrize("where", ["file", "under_file", "sys"])
def test_a_work_dir_that_cannot_be_created_is_one_error_naming_it(tmp_path, where):
    (tmp_path / "afile").write_text("x")
    work_dir = {"file": tmp_path / "afile", "under_file": tmp_path / "afile" / "run", "sys": Path("/sys/densepred_run")}[where]
    cfg = fake_config(2)
    with pytest.raises(WriteError) as info:
        fit(FakeTask(cfg), cfg, work_dir)
    message = str(info.value)
    assert message.startswith("cannot write ") and str(work_dir) in message
    assert any(reason in message for reason in ("Not a directory", "File exists", "Operation not permitted",
                                                 "Permission denied", "Read-only file system")), message


def test_read_only_work_dir_reports_the_write_not_the_cleanup(tmp_path, monkeypatch):
    """On a read-only file system creating the temporary file fails, and so does removing it: the first error is
    the one reported."""
    real_open, real_unlink = open, Path.unlink

    def read_only_open(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, mode, *args, **kwargs)

    def read_only_unlink(self, missing_ok=False):
        if str(self).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr("builtins.open", read_only_open)
    monkeypatch.setattr(Path, "unlink", read_only_unlink)
    with pytest.raises(WriteError) as info:
        checkpoint.write_text_atomic(tmp_path / "config.json", "{}")
    assert str(info.value) == f"cannot write {tmp_path / 'config.json'}: Read-only file system (nothing was written)"


def test_read_only_file_system_at_the_claim_is_one_error(tmp_path, monkeypatch):
    real_os_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(tmp_path)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / LOCK_FILE}: Read-only file system"):
        fit(FakeTask(fake_config(2)), fake_config(2), tmp_path)


def test_cli_work_dir_that_is_a_file_is_one_error_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "train.py"), str(ROOT / "configs" / "segformer_pvt_b0_toy.py"),
         "--work-dir", str(tmp_path / "afile" / "run")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == f"error: cannot write {tmp_path / 'afile' / 'run'}: Not a directory (nothing was written)\n"


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_sample_saves_the_last_iteration_and_resume_continues(tmp_path, workers):
    bad = tmp_path / "mask_0005.png"
    bad.write_text("bad")
    cfg = fake_config(12)
    cfg.data.bad_file, cfg.data.num_workers = str(bad), workers
    with pytest.raises(DataError) as info:
        fit(FakeTask(cfg), cfg, tmp_path / "run")
    message = str(info.value)
    stopped = int(message.split()[1].rstrip(":"))
    assert f"mask file {bad} holds label 7, outside the classes 0-3" in message and "\n" not in message
    assert f"the state after iteration {stopped - 1} is saved" in message
    assert checkpoint.load(tmp_path / "run" / "last.pth")["iteration"] == stopped - 1
    bad.write_text("fixed")
    result = fit(FakeTask(cfg), cfg, tmp_path / "run", resume=tmp_path / "run" / "last.pth")
    assert result["iteration"] == 12

    straight = fake_config(12)
    fit(FakeTask(straight), straight, tmp_path / "straight")
    a, b = checkpoint.load(tmp_path / "run" / "last.pth")["model"], checkpoint.load(tmp_path / "straight" / "last.pth")["model"]
    assert all((a[k] == b[k]).all() for k in a)  # the stop and resume changed nothing


def test_cli_bad_label_met_in_a_worker_is_one_error_line_and_resume_continues(tmp_path):
    import cv2

    toy = ROOT / "configs" / "segformer_pvt_b0_toy.py"
    options = [f"data.root={tmp_path / 'data'}", "data.num_train=8", "data.num_val=2", "data.size=(64, 64)",
               "data.crop=64", "data.scale=(128, 64)", "data.test_scale=(256, 64)", "data.batch_size=2",
               "data.num_workers=1", "schedule.max_iters=6", "schedule.eval_interval=6", "schedule.warmup_iters=0",
               "schedule.checkpoint_interval=100", "model.backbone_weights=None"]

    def train(*extra):
        return subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), str(toy), "--work-dir",
                               str(tmp_path / "run"), *extra, "--cfg-options", *options],
                              capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})

    from tasks.segmentation.toy import ensure_toy_dataset  # the data first, to break one mask of it
    ensure_toy_dataset(tmp_path / "data", num_train=8, num_val=2, size=(64, 64), seed=0)
    masks = sorted((tmp_path / "data").rglob("annotations/training/*.png"))
    original = masks[3].read_bytes()
    mask = cv2.imread(str(masks[3]), cv2.IMREAD_UNCHANGED)
    mask[0, 0] = 200  # toy masks hold 0..4
    cv2.imwrite(str(masks[3]), mask)
    result = train()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # the rest: the progress bar
    assert line.startswith("error: iteration ") and result.stderr.endswith(line + "\n"), result.stderr
    assert str(masks[3]) in line and "outside the 4 classes" in line and "--resume" in line
    stopped = int(line.split()[2].rstrip(":"))
    assert checkpoint.load(tmp_path / "run" / "last.pth")["iteration"] == stopped - 1
    masks[3].write_bytes(original)
    resumed = train("--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert checkpoint.load(tmp_path / "run" / "last.pth")["iteration"] == 6
