"""A config's model section sets constructor arguments (or fields the task reads itself, named in
``options_not_passed``); a misspelt or stale field is one error naming it and the valid ones."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import get_task, task_specs
from tasks.common.config import Config
from tasks.segmentation.presets import SegFormerModel, ToyData

ROOT = Path(__file__).resolve().parents[3]


def test_every_task_model_section_is_accepted():
    for spec in task_specs():
        assert spec.model_options is not None, spec.name
        spec.model.check_options(spec.model_options())


@dataclasses.dataclass
class StaleSegFormerModel(SegFormerModel):
    decoder_channels: int = 256  # a stale name: SegFormer takes decoder_dim


def test_a_stale_field_is_an_error_naming_it():
    cfg = Config(task="segmentation", model=StaleSegFormerModel(), data=ToyData())
    with pytest.raises(ValueError, match=r"model\.decoder_channels is not an option of SegFormer .*valid: .*decoder_dim"):
        get_task(cfg)


def _train(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_a_misspelt_field_in_a_config_file_is_one_error_line(tmp_path):
    config = tmp_path / "bad.py"
    config.write_text(
        "from tasks.common.config import Config\nfrom tasks.segmentation.presets import SegFormerModel, ToyData\n"
        "config = Config(task='segmentation', model=SegFormerModel(num_clases=3), data=ToyData())\n"
    )
    result = _train(config, "--work-dir", tmp_path / "run")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "line 3" in result.stderr and "'num_clases'" in result.stderr and "valid: backbone, num_classes" in result.stderr


def test_a_misspelt_cfg_option_is_one_error_line(tmp_path):
    result = _train(ROOT / "configs" / "segformer_pvt_b0_toy.py", "--work-dir", tmp_path, "--cfg-options",
                    "model.num_clases=3")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "'model.num_clases'" in result.stderr and "num_classes" in result.stderr
