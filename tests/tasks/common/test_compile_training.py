"""runtime.compile: the config values, the fallback to eager, the graph count, the bf16 warning (quick); compiled
training of every task model against eager, the engine with compile (exact --resume, DDP over gloo) under -m slow
(inductor takes minutes on a shared CPU)."""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from tasks.common import amp
from tasks.common.compile import apply_runtime, compile_model
from tasks.common.config import ConfigError, validate
from tasks.common.engine import fit
from tests.tasks.common.fake_task import Net, FakeTask, fake_config
from tests.tasks.common.test_engine import ROOT, SCRIPT, _assert_same_weights, _weights
from tests.tasks.common.training_models import KINDS, build, forward_loss, no_dropout, outputs


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Dynamo caches graphs per code object for the whole process, and every module shares ``_call_impl``'s:
    a graph compiled by an earlier test for a like model would be reused, and the counts would differ."""
    torch._dynamo.reset()


@pytest.mark.parametrize("key, value, expected", [("compile", "fast", "runtime.compile must be None"),
                                                  ("activation_checkpointing", 1, "True or False")])
def test_bad_runtime_values_are_config_errors(key, value, expected):
    cfg = fake_config()
    setattr(cfg.runtime, key, value)
    with pytest.raises(ConfigError, match=expected):
        validate(cfg)


def _failing_backend(graph, example_inputs):
    raise RuntimeError("no C++ compiler")


def test_a_failed_compile_falls_back_to_eager_with_one_warning():
    torch.manual_seed(0)
    model = Net(4).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    lines = []
    stats = compile_model(model, "default", warn=lines.append, backend=_failing_backend)
    for _ in range(2):
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    assert stats.fell_back and len(lines) == 1 and lines[0].startswith("WARNING: torch.compile failed")
    assert "no C++ compiler" in lines[0] and "\n" not in lines[0]


def _static_only_backend(graph, example_inputs):
    """Compiles static graphs and fails on dynamic sizes, as inductor does on some of our layouts."""
    if any(not isinstance(t, torch.Tensor) for t in example_inputs):  # a dynamic graph takes its sizes as inputs
        raise RuntimeError("cannot determine truth value of Relational")
    return graph.forward


def test_failed_dynamic_sizes_fall_back_to_static_graphs():
    torch.manual_seed(0)
    model = Net(4).eval()
    lines = []
    stats = compile_model(model, "default", warn=lines.append, backend=_static_only_backend)
    for size in (8, 10, 12, 10):
        x = torch.randn(2, 3, size, size)
        torch.testing.assert_close(model(x), model._call_impl(x), rtol=0, atol=0)
    assert stats.static and not stats.fell_back and stats.graphs == 3  # one per size
    assert len(lines) == 1 and "one graph per input size" in lines[0] and "Relational" in lines[0]


def test_the_model_stays_itself_and_graphs_are_counted():
    """Compiled in place: the same module and state-dict keys; a graph per mode, none for a repeated call."""
    torch.manual_seed(0)
    model = Net(4)
    keys = list(model.state_dict())
    stats = compile_model(model, "default", backend="eager")  # Dynamo's tracing without code generation
    x = torch.randn(2, 3, 8, 8)
    model(x)
    model(x)
    assert stats.graphs == 1 and list(model.state_dict()) == keys
    model.eval()
    model(x)
    assert stats.graphs == 2  # eval mode is another graph


def test_a_deep_copy_runs_eager_on_its_own_weights():
    model = Net(4).eval()
    stats = compile_model(model, "default", backend="eager")
    x = torch.randn(2, 3, 8, 8)
    model(x)
    copy_ = copy.deepcopy(model)
    with torch.no_grad():
        copy_.head.bias.add_(1.0)
    torch.testing.assert_close(copy_(x), model(x) + 1.0)
    assert stats.graphs == 1 and copy_._compiled_call_impl is None


def test_model_errors_are_not_compile_failures():
    model = Net(4)
    lines = []
    stats = compile_model(model, "default", warn=lines.append, backend="eager")
    with pytest.raises(Exception, match="channels|size|shape|expected"):
        model(torch.randn(2, 5, 8, 8))
    assert not stats.fell_back and not lines


@pytest.mark.parametrize("flags, warned", [("fpu avx2 fma", True), ("avx2 avx512f avx512_bf16", False),
                                           ("avx2 amx_bf16 amx_tile", False)])
def test_bf16_warning_on_cpus_without_native_bf16(tmp_path, flags, warned):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    line = amp.slow_bf16_warning("bf16", "cpu", cpuinfo)
    assert (line is not None) == warned
    if warned:
        assert "slower than fp32" in line and "\n" not in line
        assert amp.bf16_capability(cpuinfo) == "no native bf16 (emulated)"
    else:
        assert amp.bf16_capability(cpuinfo).startswith("native bf16 (")
    assert amp.slow_bf16_warning(None, "cpu", cpuinfo) is None
    assert amp.cpu_bf16_flags(tmp_path / "missing") is None and amp.slow_bf16_warning("bf16", "cpu", tmp_path / "missing") is None


def test_apply_runtime_warns_once_for_emulated_bf16(monkeypatch):
    monkeypatch.setattr(amp, "cpu_bf16_flags", lambda cpuinfo="/proc/cpuinfo": [])
    cfg = fake_config()
    cfg.runtime.amp = "bf16"
    lines = []
    assert apply_runtime(Net(4), cfg.runtime, torch.device("cpu"), lines.append) is None  # eager: no stats
    assert len(lines) == 1 and "bf16" in lines[0]


# Compiled (inductor) against eager in fp32: inductor fuses element-wise chains and reorders reductions, so values
# differ by float32 rounding accumulated over the network (measured up to ~1e-6 relative on these tiny models);
# 1e-4 of each tensor's magnitude is the parity tolerance of the reference tests.
def _assert_close(a, b):
    assert a.shape == b.shape
    assert (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_training_step_equals_eager(kind):
    """Outputs, loss and every parameter gradient of a compiled training forward + backward, at two sizes (the
    second makes the height and width dynamic: one more graph, not one per size)."""
    eager, compiled = no_dropout(build(kind)).train(), no_dropout(build(kind)).train()
    stats = compile_model(compiled, "default")
    for shape in [(2, 3, 64, 96), (2, 3, 96, 64), (2, 3, 128, 96)]:
        x = torch.randn(*shape)
        runs = []
        for model in (eager, compiled):
            out = outputs(model(x))
            loss = sum(t.float().pow(2).mean() for t in out)
            loss.backward()
            runs.append((out, loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
            model.zero_grad(set_to_none=True)
        (out_e, loss_e, grads_e), (out_c, loss_c, grads_c) = runs
        for a, b in zip(out_c, out_e, strict=True):
            _assert_close(a.detach(), b.detach())
        _assert_close(loss_c, loss_e)
        assert grads_c.keys() == grads_e.keys()
        for name in grads_e:
            _assert_close(grads_c[name], grads_e[name])
    assert not stats.fell_back and stats.graphs <= 3


@pytest.mark.slow
def test_compiled_run_resumes_exactly(tmp_path):
    cfg = fake_config(10, grad_accum=2)
    cfg.runtime.compile = "default"
    fit(FakeTask(cfg), cfg, tmp_path / "straight")
    records = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    counts = [r["compiled_graphs"] for r in records if r["mode"] == "train"]
    assert counts[0] >= 1 and counts[-1] <= counts[0] + 2  # train graph(s), then the eval-mode graph(s) only
    cfg.model.crash_at = 15  # the first micro-batch of iteration 8; the last checkpoint is at 6
    with pytest.raises(SystemExit):
        fit(FakeTask(cfg), cfg, tmp_path / "resumed")
    cfg.model.crash_at = -1
    fit(FakeTask(cfg), cfg, tmp_path / "resumed", resume=tmp_path / "resumed" / "last.pth")
    _assert_same_weights(_weights(tmp_path / "straight" / "last.pth"), _weights(tmp_path / "resumed" / "last.pth"))


@pytest.mark.slow
def test_compiled_ddp_two_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
           str(tmp_path / "compiled"), "6", "runtime.compile='default'", "model.dropout=0.0", "optimizer.name=sgd"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.compile failed" not in result.stdout + result.stderr
    cmd[-5:] = [str(tmp_path / "eager"), "6", "runtime.compile=None", "model.dropout=0.0", "optimizer.name=sgd"]
    assert subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600).returncode == 0
    compiled, eager = _weights(tmp_path / "compiled" / "last.pth"), _weights(tmp_path / "eager" / "last.pth")
    assert compiled.keys() == eager.keys()
    # SGD: its steps are proportional to the gradients, so rounding-close gradients give close weights (Adam's
    # first steps are lr·sign(g), which a rounding-level difference of a near-zero gradient flips)
    for name in eager:
        _assert_close(compiled[name].float(), eager[name].float())
