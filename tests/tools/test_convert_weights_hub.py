"""tools/convert_weights.py takes a hub id or `imagenet` (read from a hub cache in a temporary folder)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from backbones import build_backbone, save_backbone_weights
from tests.hubcache import cache_repo
from tests.utils import perturb

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("huggingface_hub")


def _run(cache, *args):
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    tool = ROOT / "tools" / "convert_weights.py"
    return subprocess.run([sys.executable, str(tool), *map(str, args)], capture_output=True, text=True, env=env)


def test_hub_id_and_imagenet_keyword(tmp_path):
    ref = perturb(build_backbone("pvt_v2_b0"))
    save_backbone_weights(ref, tmp_path / "w.safetensors")
    cache_repo(tmp_path / "hub", "OpenGVLab/pvt_v2_b0", {"config.json": json.dumps({}).encode(),
                                                         "model.safetensors": tmp_path / "w.safetensors"})
    for source in ("OpenGVLab/pvt_v2_b0", "imagenet"):
        out = tmp_path / f"{source.replace('/', '_')}.safetensors"
        result = _run(tmp_path / "hub", "pvt_v2_b0", source, out)
        assert result.returncode == 0, result.stderr
        loaded = build_backbone("pvt_v2_b0", weights=out)
        for k, v in ref.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
        with safe_open(str(out), "pt") as f:
            assert f.metadata()["source"] == "OpenGVLab/pvt_v2_b0"


def test_uncached_id_is_one_error_line(tmp_path):
    result = _run(tmp_path / "hub", "pvt_v2_b0", "OpenGVLab/pvt_v2_b0", tmp_path / "out.safetensors")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: OpenGVLab/pvt_v2_b0: not in the Hugging Face cache")
    assert result.stderr.count("\n") == 1 and "hf download OpenGVLab/pvt_v2_b0" in result.stderr
