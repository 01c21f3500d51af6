"""The table of published task weights: short names, hub ids, task checks and close-match errors."""
import sys
from pathlib import Path

import pytest

from tasks.common import zoo
from tests.hubcache import cache_repo, use_cache


def test_short_names_map_to_the_published_ids():
    assert zoo.resolve_name("segformer-b0-ade") == "nvidia/segformer-b0-finetuned-ade-512-512"
    assert zoo.resolve_name("segformer-b4-ade") == "nvidia/segformer-b4-finetuned-ade-512-512"
    assert zoo.resolve_name("segformer-b5-ade") == "nvidia/segformer-b5-finetuned-ade-640-640"
    assert zoo.resolve_name("segformer-b3-cityscapes") == "nvidia/segformer-b3-finetuned-cityscapes-1024-1024"
    assert zoo.resolve_name("glpn-kitti") == "vinvino02/glpn-kitti"
    assert zoo.resolve_name("deformable-detr-two-stage") == "SenseTime/deformable-detr-with-box-refine-two-stage"
    assert zoo.resolve_name("pvt_v2_b2_li") == "OpenGVLab/pvt_v2_b2_linear"
    assert zoo.resolve_name("mit_b5") == "nvidia/mit-b5"


def test_every_entry_is_well_formed():
    tasks = {"segmentation", "depth", "detection", "classification"}
    for name, entry in zoo.MODELS.items():
        assert entry.task in tasks and entry.dataset, name
        assert entry.hub_id.count("/") == 1 and "/" not in name, name
        assert all(0 < v < 1 for k, v in entry.metrics.items() if k not in ("rmse", "rmse_log")), name
        assert bool(entry.metrics) == bool(entry.source), name  # a number always says where it comes from
    assert len({m.hub_id for m in zoo.MODELS.values()}) == len(zoo.MODELS)
    assert [n for n, _ in zoo.table("detection")] == ["deformable-detr", "deformable-detr-refine", "deformable-detr-two-stage"]


def test_unknown_short_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown pretrained model 'segformer-b0-ade20k'.*did you mean segformer-b0-ade"):
        zoo.resolve_name("segformer-b0-ade20k")
    with pytest.raises(ValueError, match=r"unknown pretrained model 'zzz'.*known: segformer-b0-ade"):
        zoo.resolve("zzz")


def test_short_name_of_another_task(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # the check comes before any hub call
    with pytest.raises(ValueError, match=r"'glpn-nyu' \(vinvino02/glpn-nyu\) is a depth model, not a segmentation model"):
        zoo.resolve("glpn-nyu", task="segmentation")


def test_resolve_short_name_hub_id_and_local_path(tmp_path, monkeypatch):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    snapshot = cache_repo(cache, "vinvino02/glpn-nyu", {"config.json": b"{}", "model.safetensors": b""})
    assert zoo.resolve("glpn-nyu", task="depth") == snapshot
    assert zoo.resolve("vinvino02/glpn-nyu") == snapshot
    (tmp_path / "glpn-nyu").mkdir()  # a local folder of the same name wins
    monkeypatch.chdir(tmp_path)
    assert zoo.resolve("glpn-nyu") == tmp_path.joinpath("glpn-nyu").relative_to(tmp_path)
    with pytest.raises(FileNotFoundError, match="weights not found: best.pth"):
        zoo.resolve("best.pth")



def test_readme_shows_every_published_number():
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("## Pretrained models"): readme.index("## Backbones")]
    for name, entry in zoo.MODELS.items():
        for key, value in entry.metrics.items():
            shown = f"{value:.3f}" if entry.task == "depth" else f"{value * 100:.1f}"  # the paper's units
            assert shown in section, (name, key, shown)
