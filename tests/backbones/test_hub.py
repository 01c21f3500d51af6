"""Weights named by Hugging Face hub id, read from a hub cache built in a temporary folder (never the network)."""
import json
import sys

import pytest
import torch

from backbones import build_backbone, hub, list_backbones, save_backbone_weights
from tests.hubcache import cache_folder, cache_repo, use_cache
from tests.utils import perturb

huggingface_hub = pytest.importorskip("huggingface_hub")


def _published_folder(tmp_path, name="pvt_v2_b0"):
    """A model folder holding random weights of backbone ``name`` (config.json + model.safetensors)."""
    model = perturb(build_backbone(name, out_indices=(0, 1, 2, 3)))
    folder = tmp_path / f"src_{name}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "pvt_v2"}))
    save_backbone_weights(model, folder / "model.safetensors")
    return model, folder


def _assert_same_weights(a, b):
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


@pytest.mark.parametrize(
    "text, expected",
    [
        ("OpenGVLab/pvt_v2_b2", ("OpenGVLab/pvt_v2_b2", None)),
        ("timm/pvt_v2_b2.in1k", ("timm/pvt_v2_b2.in1k", None)),
        ("hf-hub:timm/pvt_v2_b2.in1k", ("timm/pvt_v2_b2.in1k", None)),
        ("nvidia/mit-b0@refs/pr/3", ("nvidia/mit-b0", "refs/pr/3")),
        ("org/name@0123abc", ("org/name", "0123abc")),
        ("pretrained/pvt_v2_b2.pth", None),  # a missing local file, not a repository
        ("/abs/org/name", None),
        ("a/b/c", None),
        ("pvt_v2_b2", None),
        ("./org/name", None),
    ],
)
def test_hub_id_shape(text, expected):
    assert hub.parse_hub_id(text) == expected


def test_the_library_reads_our_fake_cache(tmp_path, monkeypatch):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    snapshot = cache_repo(cache, "org/name", {"config.json": b"{}"})
    found = huggingface_hub.try_to_load_from_cache("org/name", "config.json", cache_dir=str(cache))
    assert found is not None and str(found) == str(snapshot / "config.json")
    folder = huggingface_hub.snapshot_download("org/name", cache_dir=str(cache), local_files_only=True)
    assert str(folder) == str(snapshot)


def test_backbone_weights_by_hub_id(tmp_path, monkeypatch):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    ref, folder = _published_folder(tmp_path)
    snapshot = cache_folder(cache, "someone/pvt-b0", folder)
    assert hub.resolve("someone/pvt-b0") == snapshot
    _assert_same_weights(build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3), weights="someone/pvt-b0"), ref)


def test_revision_selects_its_snapshot(tmp_path, monkeypatch):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    main, folder = _published_folder(tmp_path)
    cache_folder(cache, "someone/pvt-b0", folder)
    other = perturb(build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3)))
    save_backbone_weights(other, folder / "model.safetensors")
    cache_folder(cache, "someone/pvt-b0", folder, revision="v2")
    _assert_same_weights(build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3), weights="someone/pvt-b0@v2"), other)
    _assert_same_weights(build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3), weights="someone/pvt-b0"), main)


def test_imagenet_keyword_loads_the_published_weights(tmp_path, monkeypatch):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    ref, folder = _published_folder(tmp_path)
    cache_folder(cache, "OpenGVLab/pvt_v2_b0", folder)
    (tmp_path / "work" / "imagenet").mkdir(parents=True)  # a data set folder of that name must not shadow it
    monkeypatch.chdir(tmp_path / "work")
    _assert_same_weights(build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3), weights="imagenet"), ref)


def test_every_published_backbone_has_imagenet_weights():
    names = [f"pvt_v2_b{i}" for i in range(6)] + ["pvt_v2_b2_li"] + [f"mit_b{i}" for i in range(6)] + ["resnet50"]
    assert set(names) <= set(list_backbones())
    assert {n: hub.imagenet_weights(n) for n in names}["pvt_v2_b2_li"] == "OpenGVLab/pvt_v2_b2_linear"
    with pytest.raises(ValueError, match=r"no published ImageNet weights are known for backbone 'nope'.*pvt_v2_b0"):
        hub.imagenet_weights("nope")


def test_an_existing_local_path_wins(tmp_path, monkeypatch):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    cached, folder = _published_folder(tmp_path)
    cache_folder(cache, "someone/pvt-b0", folder)
    local = perturb(build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3)))
    (tmp_path / "someone" / "pvt-b0").mkdir(parents=True)
    (tmp_path / "someone" / "pvt-b0" / "config.json").write_text("{}")
    save_backbone_weights(local, tmp_path / "someone" / "pvt-b0" / "model.safetensors")
    monkeypatch.chdir(tmp_path)
    _assert_same_weights(build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3), weights="someone/pvt-b0"), local)


def test_uncached_id_offline_is_one_line_naming_it(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "hub")
    with pytest.raises(FileNotFoundError) as info:
        build_backbone("pvt_v2_b0", weights="OpenGVLab/pvt_v2_b0@v1")
    message = str(info.value)
    assert "\n" not in message and message.startswith("OpenGVLab/pvt_v2_b0@v1: not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE=1" in message and "hf download OpenGVLab/pvt_v2_b0 --revision v1" in message


def test_cached_snapshot_without_weights(tmp_path, monkeypatch):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    cache_repo(cache, "org/empty", {"config.json": b"{}"})
    with pytest.raises(FileNotFoundError, match=r"^org/empty: the cached snapshot .* holds no model.safetensors"):
        hub.resolve("org/empty")


def test_missing_package_is_one_line(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path / "hub")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    with pytest.raises(FileNotFoundError, match=r"^org/name .*huggingface_hub is not installed.*pip .*hf download"):
        hub.resolve("org/name")


def test_missing_local_path_is_not_looked_up(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # proves no hub call is attempted
    with pytest.raises(FileNotFoundError, match=r"weights not found: pretrained/pvt_v2_b2.pth is not an existing"):
        build_backbone("pvt_v2_b0", weights="pretrained/pvt_v2_b2.pth")
    with pytest.raises(FileNotFoundError, match="weights not found"):
        hub.resolve(tmp_path / "org" / "name")  # a Path is always a path


def test_online_download_fetches_one_weights_format(tmp_path, monkeypatch):
    """Online, only the config and the safetensors are asked for; a repository without them gets a second
    request for pytorch_model.bin. (snapshot_download is replaced: tests never touch the network.)"""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    calls = []

    def fake_snapshot_download(repo_id, *, allow_patterns, local_files_only, revision, cache_dir):
        calls.append(allow_patterns)
        snapshot = tmp_path / "snap"
        snapshot.mkdir(exist_ok=True)
        if "pytorch_model.bin" in allow_patterns:
            (snapshot / "pytorch_model.bin").write_bytes(b"")
        assert not local_files_only and cache_dir == str(tmp_path / "hub") and revision is None
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert hub.resolve("org/old-repo") == tmp_path / "snap"
    assert [("model.safetensors" in c, "pytorch_model.bin" in c) for c in calls] == [(True, False), (False, True)]
    assert not any(p.endswith((".h5", ".msgpack", ".onnx")) for c in calls for p in c)


def test_network_failure_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    class LocalEntryNotFoundError(Exception):
        pass

    def unreachable(repo_id, **kwargs):
        raise LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder\nplease check your connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(FileNotFoundError) as info:
        hub.resolve("org/name")
    assert "\n" not in str(info.value) and "the hub could not be reached" in str(info.value)
