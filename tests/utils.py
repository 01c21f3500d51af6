"""Helpers shared by the tests (and by their reference-parity twins, the test_*_parity.py files)."""
import subprocess
import sys
from pathlib import Path

import torch

TOOLS = Path(__file__).resolve().parents[1] / "tools"

# The bound of every fp32 output comparison against a reference implementation with the same weights. The two
# run the same math in another order (fused attention, channels-last convolutions, folded BatchNorm, another
# reduction order per thread count), which moves these small random-weight models' outputs by ~1e-6 to 2e-5;
# a real difference is far larger: a LayerNorm eps of 1e-5 for 1e-6 moves logits by ~1e-4 to 1e-3, a wrong
# or transposed weight by > 1e-2. Where a comparison is not of this kind, its test says why its bound differs.
PARITY_ATOL = 1e-4


def perturb(module: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Add noise to every parameter (and BN statistic) so that no weight keeps a trivial init (LN = 1/0)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.1)
    return module.eval()


def assert_features_close(ours: dict, reference, atol: float = PARITY_ATOL) -> None:
    """``ours``: {stage name: tensor}; ``reference``: the 4 stage tensors in order."""
    assert list(ours) == ["stage1", "stage2", "stage3", "stage4"]
    for (name, a), b in zip(ours.items(), reference):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        err = (a - b).abs().max().item()
        assert err <= atol, f"{name}: max abs diff {err:.3g} > {atol}"


def run_tool(script: str, *args) -> subprocess.CompletedProcess:
    """Run ``tools/<script>`` in a child process, as a user would; output captured as text."""
    return subprocess.run([sys.executable, str(TOOLS / script), *map(str, args)], capture_output=True, text=True)


def is_hugging_face(module) -> bool:
    """True for a transformers model; never imports transformers, so non-parity tests run without it."""
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(module, transformers.PreTrainedModel)


# --- segmentation and depth: our model against a reference (Hugging Face or one of ours) ------------------

DEPTH_REL_TOL = 1e-5  # max abs depth difference / max_depth: 1e-4 m for max_depth 10; measured ~5e-7 relative


def assert_same_logits(ours, ref, x, atol=PARITY_ATOL):
    with torch.no_grad():
        a = ours(x)
        b = ref(pixel_values=x).logits if is_hugging_face(ref) else ref(x)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= atol, f"max abs diff {err:.3g} > {atol}"


def assert_same_depth(ours, ref, x):
    """``ref``: HF (``predicted_depth[B, H', W']``, H' >= H: compared on its top-left H x W) or one of ours."""
    with torch.no_grad():
        a = ours(x)
        if is_hugging_face(ref):
            b = ref(pixel_values=x).predicted_depth[:, None, : x.shape[-2], : x.shape[-1]]
        else:
            b = ref(x)
    assert a.shape == b.shape == (x.shape[0], 1, *x.shape[-2:]), (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= DEPTH_REL_TOL * ours.max_depth, f"max abs diff {err:.3g} m > {DEPTH_REL_TOL * ours.max_depth:.3g} m"


# --- detection ----------------------------------------------------------------------------------------------

DETR_VARIANTS = {
    "base": {},
    "single_scale": dict(num_feature_levels=1),
    "single_scale_dc5": dict(num_feature_levels=1, dilation=True),
    "box_refine": dict(with_box_refine=True),
    "two_stage": dict(with_box_refine=True, two_stage=True),
}


def padded_batch(images):
    H = max(x.shape[-2] for x in images)
    W = max(x.shape[-1] for x in images)
    batch = torch.zeros(len(images), 3, H, W)
    mask = torch.zeros(len(images), H, W, dtype=torch.long)
    for i, x in enumerate(images):
        batch[i, :, : x.shape[-2], : x.shape[-1]] = x
        mask[i, : x.shape[-2], : x.shape[-1]] = 1
    return batch, mask


def random_detr_outputs(batch=2, queries=30, classes=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.cat([torch.rand(batch, queries, 2, generator=g), torch.rand(batch, queries, 2, generator=g) * 0.5], -1)
    return {"pred_logits": torch.randn(batch, queries, classes, generator=g) * 3, "pred_boxes": boxes}


# --- multi-scale deformable attention -----------------------------------------------------------------------

LEVEL_SHAPES = [(6, 8), (3, 4), (2, 2)]  # non-square, with a 2x2 level whose border matters


def deform_attn_inputs(B=2, Q=5, heads=2, d=3, P=3, dtype=torch.float32, spread=0.3):
    S = sum(h * w for h, w in LEVEL_SHAPES)
    value = torch.randn(B, S, heads, d, dtype=dtype)
    L = len(LEVEL_SHAPES)
    # Locations reach outside [0, 1] so the zero padding is exercised.
    loc = (torch.rand(B, Q, heads, L, P, 2, dtype=dtype) * (1 + 2 * spread) - spread)
    weights = torch.rand(B, Q, heads, L * P, dtype=dtype).softmax(-1).view(B, Q, heads, L, P)
    return value, loc, weights
