"""Our backbones drop into torchvision's detectors and load torchvision's ResNet-50 weights."""
import torch
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models._utils import IntermediateLayerGetter

from backbones import build_backbone
from tests.utils import perturb


def test_pvt_v2_in_faster_rcnn_trains_and_predicts():
    body = build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3))
    stages = list(body.feature_channels)
    fpn = BackboneWithFPN(
        body,
        return_layers={s: str(i) for i, s in enumerate(stages)},
        in_channels_list=[body.feature_channels[s] for s in stages],
        out_channels=64,
    )
    model = FasterRCNN(fpn, num_classes=3, min_size=128, max_size=160)
    images = [torch.rand(3, 128, 160), torch.rand(3, 120, 150)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 80.0, 90.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[5.0, 5.0, 60.0, 40.0], [70.0, 50.0, 140.0, 110.0]]), "labels": torch.tensor([2, 1])},
    ]
    model.train()
    losses = model(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert body.stage1.patch_embed.proj.weight.grad is not None
    assert body.stage4.norm.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2 and {"boxes", "labels", "scores"} <= set(detections[0])


def test_resnet50_loads_torchvision_weights(tmp_path):
    reference = perturb(resnet50())
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    ours = build_backbone("resnet50", out_indices=(0, 1, 2, 3), weights=tmp_path / "resnet50.pth").eval()
    getter = IntermediateLayerGetter(reference, {f"layer{i}": f"stage{i}" for i in range(1, 5)})
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected, out = getter(x), ours(x)
    for stage in out:
        torch.testing.assert_close(out[stage], expected[stage], atol=1e-5, rtol=1e-5)
    assert ours.feature_strides == {"stage1": 4, "stage2": 8, "stage3": 16, "stage4": 32}
    assert [out[s].shape[1] for s in out] == [256, 512, 1024, 2048]


def test_resnet50_frozen_bn_from_a_detr_style_checkpoint(tmp_path):
    reference = perturb(resnet50())
    # DETR stores its backbone under backbone.0.body. with frozen BN (no num_batches_tracked).
    state = {f"backbone.0.body.{k}": v for k, v in reference.state_dict().items() if "num_batches" not in k}
    state["class_embed.weight"] = torch.zeros(91, 256)
    torch.save({"model": state}, tmp_path / "detr.pth")
    ours = build_backbone("resnet50", norm_layer="frozen_bn", weights=tmp_path / "detr.pth").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = IntermediateLayerGetter(reference, {"layer4": "stage4"})(x)["stage4"]
        # Frozen BN folds the statistics into a scale and shift: equal up to rounding, relative to the scale.
        tol = 1e-5 * expected.abs().max().item()
        torch.testing.assert_close(ours(x)["stage4"], expected, atol=tol, rtol=0)
        ours.train()  # frozen BN stays frozen in training mode
        torch.testing.assert_close(ours(x)["stage4"], expected, atol=tol, rtol=0)
