"""Training steps (forward + loss + backward + AdamW step) of ours vs Hugging Face, with peak memory and the
step's share of the machine's GEMM rate; in fp32 also the pvt_v2_b2 batch-8 inference rows vs Hugging Face and
timm. ``--amp bf16`` runs both sides of every step under the same ``torch.autocast("cpu", bfloat16)``.

Both sides of a row hold the same weights, see the same input and targets, and compute the same loss, with
every dropout and drop-path rate at 0 so that the two are comparable exactly. Before any step the loss and
the gradient with respect to the input image are compared in fp32, and so is the norm of all parameter
gradients (the same parameters under other names on each side), all relative to the reference's magnitude;
under ``--amp bf16`` each side's bf16 loss and input gradient are then compared with the fp32 reference, and
ours must be within the bf16 tolerance or no further from it than Hugging Face's own bf16 step."""
from __future__ import annotations

import itertools
import re
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from backbones import build_backbone

from . import backbone, detr, glpn, segformer
from tasks.common.amp import autocast, bf16_capability
from tasks.common.compile import set_activation_checkpointing
from tasks.common.optim import adam_implementation

from . import classification
from .common import TOLERANCE, gflops, ratio, repeats_of, table, time_interleaved

GRAD_TOLERANCE = 1e-3  # the input gradient's relative L2 difference (see compare)
BF16_TOLERANCE = 5e-2  # bf16 vs the fp32 reference: loss and input gradient, relative (tests/tasks/common/test_amp.py)


@dataclass
class Side:
    """One implementation of a training step: ``loss(x)`` runs forward + loss on image batch ``x``."""

    model: torch.nn.Module
    loss: Callable[[torch.Tensor], torch.Tensor]
    tie: Callable[[str], str] = str  # parameter name -> group whose gradients the reference holds as one tensor
    amp: str = "none"  # the autocast of step(): none | bf16

    def __post_init__(self):
        self.model.train()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        # Both sides take the update our training uses (tasks.common.optim: fused where the device has it).
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-6, weight_decay=0.01, **adam_implementation(trainable))

    def step(self, x: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.amp, "cpu"):
            loss = self.loss(x)
        loss.backward()
        self.optimizer.step()


def measure(side: Side, x: torch.Tensor, amp: str = "none", input_grad: bool = True):
    """``(loss, input gradient or None, norm of all parameter gradients)`` of one forward + backward, nothing
    stepped. A compiled side is measured without the input gradient (its graph is the timed step's)."""
    xg = x.clone().requires_grad_(True) if input_grad else x
    with autocast(amp, "cpu"):
        loss = side.loss(xg)
    loss.backward()
    groups: dict[str, torch.Tensor] = {}
    for name, p in side.model.named_parameters():
        if p.grad is not None:
            key = side.tie(name)
            groups[key] = groups[key] + p.grad.double() if key in groups else p.grad.double()
    norm = torch.sqrt(sum(g.pow(2).sum() for g in groups.values()))
    side.model.zero_grad(set_to_none=True)
    return loss.detach().double(), xg.grad.double() if input_grad else None, norm


def _relative(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


def compare(ours: Side, ref: Side, x: torch.Tensor) -> tuple[float, float, float]:
    """Before any step: relative differences of the loss, the input gradient (L2 norm of the difference over
    the reference's: fp32 sums over a deep network differ in single elements, while the whole gradient
    agrees; in float64 these models agree to ~1e-14) and the norm of all parameter gradients."""
    (la, ga, na), (lb, gb, nb) = measure(ours, x), measure(ref, x)
    return _relative(la, lb), _relative(ga, gb), _relative(na, nb)


def compare_amp(ours: Side, ref: Side, x: torch.Tensor, amp: str) -> tuple[float, float, float, float]:
    """``(ours loss, ours input grad, HF loss, HF input grad)``: each side's ``amp`` step against the fp32
    reference (Hugging Face's fp32 step), relative."""
    lr, gr, _ = measure(ref, x)
    lo, go, _ = measure(ours, x, amp)
    lh, gh, _ = measure(ref, x, amp)
    return _relative(lo, lr), _relative(go, gr), _relative(lh, lr), _relative(gh, gr)


def step_gflops(side: Side, x: torch.Tensor, amp: str) -> float:
    """GFLOPs of one forward + backward (2 per multiply-add; the optimizer's element-wise work not counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(amp, "cpu"):
            loss = side.loss(x)
        loss.backward()
    side.model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def peak_mb(side: Side, x: torch.Tensor) -> float:
    """Peak of the tensor memory allocated during one step above what is live at its start (weights,
    gradients-to-be and AdamW state excluded once warmed up): the running sum of the CPU allocator's
    allocations and frees, as the torch profiler records them, in order."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        side.step(x)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    return max(itertools.accumulate(n for _, n in events), default=0) / 2**20


def checkpointed_peak_mb(side: Side, x: torch.Tensor) -> float:
    """``peak_mb`` with ``runtime.activation_checkpointing`` on (every recomputable part of the model)."""
    set_activation_checkpointing(side.model, True)
    try:
        return peak_mb(side, x)
    finally:
        set_activation_checkpointing(side.model, False)


def gemm_gflops_per_s(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """The machine's GEMM rate in ``dtype``: a large ``torch.mm``, median of ``repeats``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


# Hugging Face config arguments that turn off every dropout and drop-path (ours reads them from the config).
MIT_NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0)
DETR_NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


def segformer_case(size: tuple[int, int], batch: int, name: str = "mit_b2") -> tuple[Side, Side, torch.Tensor]:
    from tasks.segmentation.losses import segmentation_loss

    ours, hf = segformer.models(name, classifier_dropout_prob=0.0, **MIT_NO_DROPOUT)
    target = torch.randint(0, 150, (batch, *size))
    x = torch.randn(batch, 3, *size)
    return (Side(ours, lambda x: segmentation_loss(ours(x), target)["loss_ce"]),
            Side(hf, lambda x: hf(pixel_values=x, labels=target).loss), x)


def pvt_case(size: tuple[int, int], batch: int, name: str = "pvt_v2_b2") -> tuple[Side, Side, torch.Tensor]:
    hf, _ = backbone.references(name)
    ours = backbone.ours_from(name, hf, f"HF {name}", **backbone.HF_EPS)

    def stage_loss(features) -> torch.Tensor:  # every stage output contributes, as under a dense head
        return sum(f.pow(2).mean() for f in features)

    return (Side(ours, lambda x: stage_loss(ours(x).values())),
            Side(hf, lambda x: stage_loss(hf(pixel_values=x, output_hidden_states=True).hidden_states)),
            torch.randn(batch, 3, *size))


def glpn_case(size: tuple[int, int], batch: int, name: str = "mit_b2") -> tuple[Side, Side, torch.Tensor]:
    from tasks.depth.losses import silog_loss

    ours, hf = glpn.models(name, **MIT_NO_DROPOUT)
    target = torch.rand(batch, *size) * 9 + 0.5  # metres, inside max_depth 10
    return (Side(ours, lambda x: silog_loss(ours(x)[:, 0], target)["loss_silog"]),
            Side(hf, lambda x: hf(pixel_values=x, labels=target).loss), torch.rand(batch, 3, *size))


def detr_case(sizes: list[tuple[int, int]]) -> tuple[Side, Side, torch.Tensor]:
    """Box refinement, auxiliary losses, the original's costs and loss weights on both sides."""
    from tasks.detection.losses import SetCriterion, weighted_total
    from tasks.detection.matcher import HungarianMatcher

    ours, hf = detr.models("box_refine", auxiliary_loss=True, class_cost=2, **DETR_NO_DROPOUT)
    H, W = max(h for h, _ in sizes), max(w for _, w in sizes)
    x, mask = torch.zeros(len(sizes), 3, H, W), torch.zeros(len(sizes), H, W, dtype=torch.long)
    for i, (h, w) in enumerate(sizes):
        x[i, :, :h, :w] = torch.randn(3, h, w)
        mask[i, :h, :w] = 1
    g = torch.Generator().manual_seed(0)
    targets = []
    for n in (5, 9):
        centre, extent = torch.rand(n, 2, generator=g) * 0.6 + 0.2, torch.rand(n, 2, generator=g) * 0.3 + 0.05
        targets.append({"labels": torch.randint(1, 91, (n,), generator=g), "boxes": torch.cat([centre, extent], 1)})
    weights = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    criterion = SetCriterion(91, HungarianMatcher(2.0, 5.0, 2.0), weights)
    hf_labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
    for name, p in hf.model.backbone.named_parameters():  # as ours and the original: stem and layer1 frozen
        if not any(f"layer{i}" in name for i in (2, 3, 4)):
            p.requires_grad_(False)
    frozen = [sum(p.numel() for p in m.parameters() if not p.requires_grad) for m in (ours, hf)]
    if frozen[0] != frozen[1]:
        sys.exit(f"error: frozen parameters differ: ours {frozen[0]}, Hugging Face {frozen[1]}")
    # Hugging Face (5.x) shares one class head across the decoder layers, ours keeps one per layer like the
    # original; loaded from HF they start equal, and the shared head's gradient is the sum of ours'.
    shared = hf.class_embed[0].weight is hf.class_embed[-1].weight
    tie = (lambda name: re.sub(r"^head\.class_embed\.\d+\.", "head.class_embed.", name)) if shared else str
    return (Side(ours, lambda x: weighted_total(criterion(ours(x, mask), targets), weights), tie),
            Side(hf, lambda x: weighted_total(hf(pixel_values=x, pixel_mask=mask, labels=hf_labels).loss_dict, weights)),
            x)


def classifier_case(batch: int, name: str = "pvt_v2_b2") -> tuple[Side, Side, torch.Tensor]:
    from tasks.classification.losses import classification_loss

    m = classification.models(name)
    ours, hf = m["ours (hf)"], m["hf"]
    labels = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(0))
    onehot = torch.nn.functional.one_hot(labels, 1000).float()  # soft-target CE of a one-hot = HF's CE
    return (Side(ours, lambda x: classification_loss(ours(x), onehot)["loss_cls"]),
            Side(hf, lambda x: hf(pixel_values=x, labels=labels).loss), torch.randn(batch, 3, 224, 224))


CASES = {  # row name -> (builder, quick builder: smaller variant and input)
    "SegFormer-b2, 2×512×512, 150 classes": (lambda: segformer_case((512, 512), 2), lambda: segformer_case((64, 64), 1, "mit_b0")),
    "PVTv2-b2 backbone, 8×224×224": (lambda: pvt_case((224, 224), 8), lambda: pvt_case((64, 64), 2, "pvt_v2_b0")),
    "GLPN-b2, 2×448×576": (lambda: glpn_case((448, 576), 2), lambda: glpn_case((64, 96), 1, "mit_b0")),
    "Deformable-DETR R50 + box refinement, 480×640 + 544×608 (padded)":
        (lambda: detr_case([(480, 640), (544, 608)]), lambda: detr_case([(96, 128), (128, 96)])),
    "PVTv2-b2 classifier, 16×224×224, 1000 classes": (lambda: classifier_case(16), lambda: classifier_case(2, "pvt_v2_b0")),
}


def train_row(name: str, build: Callable, repeats: int, amp: str, rates: dict[str, float]) -> tuple[list, bool]:
    """Compare, then time one training step of each side interleaved; then their peak memory and our step's
    share of the GEMM rate of its precision."""
    ours, ref, x = build()
    loss_diff, grad_diff, norm_diff = compare(ours, ref, x)
    ok = max(loss_diff, norm_diff) <= TOLERANCE and grad_diff <= GRAD_TOLERANCE
    checks = [f"{loss_diff:.1e}", f"{grad_diff:.1e}", f"{norm_diff:.1e}"]
    if amp != "none":
        lo, go, lh, gh = compare_amp(ours, ref, x, amp)
        ok &= lo <= max(BF16_TOLERANCE, 1.5 * lh) and go <= max(BF16_TOLERANCE, 1.5 * gh)
        checks += [f"{lo:.1e} / {go:.1e}", f"{lh:.1e} / {gh:.1e}"]
    ours.amp = ref.amp = amp
    ms = time_interleaved({"ours": lambda: ours.step(x), "hf": lambda: ref.step(x)}, repeats, warmup=1)
    mem = {"ours": peak_mb(ours, x), "hf": peak_mb(ref, x), "ckpt": checkpointed_peak_mb(ours, x)}
    rate = step_gflops(ours, x, amp) / (ms["ours"] / 1e3)
    row = [name, f"{ms['ours']:.0f}", f"{ms['hf']:.0f}", ratio(ms, "hf"), f"{mem['ours']:.0f}", f"{mem['hf']:.0f}",
           f"{mem['ours'] / mem['hf']:.2f}×", f"{mem['ckpt']:.0f}", f"{mem['ckpt'] / mem['hf']:.2f}×", f"{rate:.0f}",
           f"{rate / rates[amp]:.0%}", *checks,
           "OK" if ok else "MISMATCH"]
    return row, ok


def suite(args) -> bool:
    """Training steps ours vs HF with peak memory, batch-8 backbone inference, GEMM-rate shares; True if all agree.
    Needs autograd: called outside inference_mode (tools/benchmark.py train_suite)."""
    repeats, amp = repeats_of(args), args.amp
    rates = {"none": gemm_gflops_per_s(), "bf16": gemm_gflops_per_s(dtype=torch.bfloat16)}
    print(f"GEMM rate of this machine (torch.mm 2048×2048, median of 5, this run): fp32 {rates['none']:.0f} GFLOP/s, "
          f"bf16 {rates['bf16']:.0f} GFLOP/s (CPU: {bf16_capability()})")
    rows, ok = [], True
    for name, (build, quick) in CASES.items():
        if args.only is not None and args.only not in name:
            continue
        label, builder = (f"{name} (quick: smaller)", quick) if args.quick else (name, build)
        row, row_ok = train_row(label, builder, repeats, amp, rates)
        rows.append(row)
        ok &= row_ok
        print(f"  measured {' | '.join(map(str, row))}", file=sys.stderr)  # kept if a long run is cut short
    precision = "fp32" if amp == "none" else f"{amp} autocast on both sides; CPU: {bf16_capability()}"
    print(f"\n### Training step (forward + loss + backward + AdamW), {precision}: ours vs Hugging Face "
          f"(median of {repeats} runs)\n")
    header = ["training step", "ours ms", "HF ms", "vs HF", "ours peak MiB", "HF peak MiB", "memory ours/HF",
              "ours checkpointed peak MiB", "checkpointed ours/HF", "ours GFLOP/s", f"of {'fp32' if amp == 'none' else amp} GEMM rate", "loss diff", "input-grad diff",
              "grad-norm diff"]
    if amp != "none":
        header += [f"ours {amp} vs fp32: loss / input grad", f"HF {amp} vs fp32: loss / input grad"]
    print(table(header + [f"≤{TOLERANCE:g} / {GRAD_TOLERANCE:g}" + ("" if amp == "none" else f"; {BF16_TOLERANCE:g}")],
                rows, args.markdown))
    print("\nGFLOP/s: forward + backward FLOPs of our step (torch FlopCounterMode, 2 per multiply-add) over its time.")
    if amp == "none":
        ok &= _inference_rows(args, repeats, rates["none"])
    return ok


def _inference_rows(args, repeats: int, gemm: float) -> bool:
    ok = True
    grid = [("pvt_v2_b0", 2, 64)] if args.quick else [("pvt_v2_b2", 8, 224), ("pvt_v2_b2", 8, 512)]
    rows = []
    with torch.inference_mode():
        for name, batch, size in grid:
            row, row_ok = backbone.backbone_row(name, batch, size, repeats)
            ok &= row_ok
            rate = float(row[-1]) * batch / (float(row[3]) / 1e3)  # GFLOPs/img x images / seconds
            rows.append(row[:8] + [row[-3], f"{rate:.0f}", f"{rate / gemm:.0%}"])
        x1 = torch.randn(1, 3, *(grid[-1][2],) * 2)
        one = build_backbone(grid[-1][0], out_indices=(0, 1, 2, 3)).eval()
        ms1 = time_interleaved({"ours": lambda: one(x1)}, repeats)["ours"]
        rate1 = gflops(one, x1) / (ms1 / 1e3)
    print(f"\n### Backbone inference at batch {grid[0][1]}: ours vs Hugging Face vs timm (median of {repeats} runs)\n")
    print(table(["model", "batch", "size", "ours ms", "HF ms", "timm ms", "vs HF", "vs timm", "agree", "ours GFLOP/s",
                 "of GEMM rate"], rows, args.markdown))
    print(f"\n{grid[-1][0]} reaches {rate1 / gemm:.0%} of the fp32 GEMM rate in a batch-1 {x1.shape[-1]}² forward "
          f"({rate1:.0f} GFLOP/s).")
    return ok
