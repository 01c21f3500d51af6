"""Config files and --cfg-options: typed, strict, one clear message per mistake."""
from dataclasses import dataclass

import pytest

from tasks.common.config import Config, ConfigError, ScheduleConfig, adamw, apply_options, load_config, poly


@dataclass
class Model:
    backbone: str = "pvt_v2_b0"
    num_classes: int = 4
    weights: str | None = None


@dataclass
class Data:
    root: str = "data"
    batch_size: int = 2
    num_workers: int = 0
    scale: tuple[int, int] = (64, 64)


def _cfg() -> Config:
    return Config(task="segmentation", model=Model(), data=Data(), optimizer=adamw(lr=6e-5), schedule=poly(100))


def test_options_set_typed_values():
    cfg = apply_options(
        _cfg(),
        [
            "schedule.max_iters=20",
            "optimizer.lr=1e-3",
            "optimizer.weight_decay=0",  # an int where a float is expected is converted
            "data.scale=[32, 48]",  # a list where a tuple is expected too
            "data.root=/tmp/some dir",  # a bare path stays a string
            "model.weights=None",
            "schedule.clip_grad=0.1",
            "optimizer.lr_mults={'head': 10.0}",
            "optimizer.lr_mults.backbone=0.1",
            "runtime.seed=3",
        ],
    )
    assert cfg.schedule.max_iters == 20 and cfg.optimizer.lr == 1e-3
    assert isinstance(cfg.optimizer.weight_decay, float)
    assert cfg.data.scale == (32, 48) and cfg.data.root == "/tmp/some dir"
    assert cfg.optimizer.lr_mults == {"head": 10.0, "backbone": 0.1}
    assert cfg.schedule.clip_grad == 0.1 and cfg.runtime.seed == 3


@pytest.mark.parametrize(
    "option, match",
    [
        ("schedule.max_iter=5", r"unknown key 'schedule.max_iter'; valid keys at schedule: max_iters, epochs"),
        ("foo=1", "valid keys at the top level: task, model, data"),
        ("schedule.max_iters=ten", "schedule.max_iters expects int, got 'ten'"),
        ("schedule.max_iters=True", "expects int"),
        ("data.batch_size=2.5", "expects int"),
        ("schedule=3", "schedule is a section"),
        ("schedule.max_iters.x=3", "is a value, not a section"),
        ("max_iters", "KEY=VALUE"),
    ],
)
def test_bad_options(option, match):
    with pytest.raises(ConfigError, match=match):
        apply_options(_cfg(), [option])


def test_every_config_has_the_common_keys():
    cfg = _cfg()
    for key in ("schedule.max_iters", "schedule.eval_interval", "schedule.checkpoint_interval", "data.batch_size",
                "data.num_workers", "runtime.seed", "runtime.device"):
        apply_options(cfg, [f"{key}={'cpu' if key == 'runtime.device' else 1}"])
    assert isinstance(cfg.schedule, ScheduleConfig)


def test_load_config(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(
        "from tasks.common.config import Config, adamw, poly\n"
        "config = Config(task='segmentation', model={'a': 1}, data={'b': 2}, optimizer=adamw(1e-4), schedule=poly(10))\n"
    )
    assert load_config(good).schedule.max_iters == 10
    with pytest.raises(ConfigError, match="config file not found: .*missing.py"):
        load_config(tmp_path / "missing.py")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="must define `config = Config"):
        load_config(bad)
    typo = tmp_path / "typo.py"
    typo.write_text("from tasks.common.config import poly\nconfig = poly(max_iters=10, warmup=5)\n")
    with pytest.raises(ConfigError, match="typo.py, line 2: TypeError: .*warmup"):
        load_config(typo)
