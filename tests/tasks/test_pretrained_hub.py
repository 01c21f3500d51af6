"""Our own task models published as hub repositories (config.json {"task", "model"} + model.safetensors), loaded by
hub id from a hub cache in a temporary folder (``HF_HUB_OFFLINE=1``); no reference library needed."""
import json
import sys

import pytest
import torch
from safetensors.torch import save_file

import tasks
from tasks.depth.model import GLPN
from tasks.segmentation.model import SegFormer
from tests.hubcache import cache_folder, use_cache
from tests.utils import perturb

pytest.importorskip("huggingface_hub")


def _publish(tmp_path, monkeypatch, model, task, repo_id):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"task": task, "model": model.config}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    cache_folder(cache, repo_id, folder)


@pytest.mark.parametrize("cls, task, x", [(SegFormer, "segmentation", torch.randn(1, 3, 64, 96)),
                                          (GLPN, "depth", torch.rand(1, 3, 64, 96))])
def test_our_model_by_hub_id(tmp_path, monkeypatch, cls, task, x):
    model = perturb(cls("pvt_v2_b0"))
    _publish(tmp_path, monkeypatch, model, task, "someone/our-model")
    for loaded in (cls.from_pretrained("someone/our-model"), tasks.load_pretrained("someone/our-model")):
        assert type(loaded) is cls and not loaded.training
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


def test_uncached_and_missing_package(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "hub")
    with pytest.raises(FileNotFoundError, match=r"^someone/not-cached: not in the Hugging Face cache"):
        SegFormer.from_pretrained("someone/not-cached")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(FileNotFoundError, match=r"^someone/not-cached .*huggingface_hub is not installed"):
        GLPN.from_pretrained("someone/not-cached")


def test_short_name(tmp_path, monkeypatch):
    model = perturb(GLPN("pvt_v2_b0"))
    _publish(tmp_path, monkeypatch, model, "depth", "vinvino02/glpn-nyu")
    x = torch.rand(1, 3, 64, 64)
    for loaded in (GLPN.from_pretrained("glpn-nyu"), tasks.load_pretrained("glpn-nyu")):
        assert type(loaded) is GLPN
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"'glpn-nyu' \(vinvino02/glpn-nyu\) is a depth model, not a segmentation"):
        SegFormer.from_pretrained("glpn-nyu")
    with pytest.raises(ValueError, match=r"unknown pretrained model 'glpn-nuy'.*did you mean glpn-nyu"):
        GLPN.from_pretrained("glpn-nuy")
