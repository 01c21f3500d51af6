"""Panoptic SegFormer on PVTv2-B5, COCO panoptic 2017: the authors' recipe (zhiqi-li/Panoptic-SegFormer,
configs/panformer/panformer_pvtb5_24e_coco_panoptic.py; published 55.6 PQ on val2017).

Data: data/coco/{train2017,val2017}/ and data/coco/annotations/panoptic_{train,val}2017.json with the PNG folders
beside them; 80 thing + 53 stuff categories as contiguous classes (things first), predictions in COCO category
ids. Backbone: the authors' ImageNet-22k PVTv2-B5 (drop path 0.1), a file to download first (no hub serves it):
    wget https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b5_22k.pth -P checkpoints/
or pass another path with --cfg-options model.backbone_weights=PATH (a local file; a URL is not read).
With the ImageNet-1k weights instead (model.backbone_weights=OpenGVLab/pvt_v2_b5, the same network, from the
Hugging Face hub) expect a lower PQ than 55.6: the authors publish no B5 result from 1k weights.

AdamW 1.4e-4, weight decay 1e-4 on every parameter (norms and biases too, as mmcv's optimizer without
paramwise decay multipliers), backbone, sampling offsets and reference points x0.1, gradient clip 0.1, 24 epochs
with the drop (x0.1) at epoch 18, counted from the real dataset size, no warm-up. Total batch 8 =
data.batch_size x processes x schedule.grad_accum (the authors: 8 GPUs x 1 image; loss normalisers over the
whole step either way). 300 location queries, 6+6 transformer layers, mask decoder 4 (things) + 6 (stuff)
layers, one query per object into the mask decoder; losses focal 2 / L1 5 / GIoU 2 / dice 2 / stuff presence 4,
things and stuff weighted by their counts. Evaluation: short side 800 (max 1333), mask-wise merging with the B5
config's quality thresholds 0.3.
"""
from tasks.common.config import Config, OptimizerConfig, RuntimeConfig, ScheduleConfig
from tasks.panoptic.presets import coco_panoptic, panoptic_segformer

config = Config(
    task="panoptic",
    model=panoptic_segformer("pvt_v2_b5", num_things_classes=80, num_stuff_classes=53, num_queries=300,
                             backbone_weights="checkpoints/pvt_v2_b5_22k.pth", backbone_args={"drop_path_rate": 0.1},
                             merge={"quality_threshold_things": 0.3, "quality_threshold_stuff": 0.3}),
    data=coco_panoptic("data/coco", batch_size=1, val_batch_size=1, num_workers=2),
    optimizer=OptimizerConfig(
        name="adamw",
        lr=1.4e-4,
        weight_decay=1e-4,
        decay_norm_and_bias=True,
        lr_mults={"backbone": 0.1, "sampling_offsets": 0.1, "reference_points": 0.1},
    ),
    schedule=ScheduleConfig(
        policy="step",
        epochs=24,
        epoch_milestones=(18,),
        gamma=0.1,
        clip_grad=0.1,
        total_batch=8,
        eval_interval=20000,
        checkpoint_interval=5000,
        log_interval=50,
    ),
    runtime=RuntimeConfig(seed=42, device="auto"),
)
