"""Deformable-DETR on PVTv2-b2, COCO 2017: the Deformable-DETR recipe (fundamentalvision/Deformable-DETR main.py).

Data: data/coco/{train2017,val2017}/ and data/coco/annotations/instances_{train,val}2017.json; raw category ids
as classes (91 = max id + 1, no background logit; crowd boxes are dropped from training targets and act as
ignore regions in evaluation). Weights: the ImageNet-1k PVTv2-b2 release by hub id OpenGVLab/pvt_v2_b2.

AdamW 2e-4, backbone 2e-5, sampling offsets and reference points x0.1, weight decay 1e-4 (none on norms and
biases), gradient clip 0.1, 50 epochs with the drop (x0.1) at epoch 40, counted from the real dataset size.
Total batch 32 = data.batch_size x processes x schedule.grad_accum: the original used 8 GPUs x 4; on 4 GPUs
--cfg-options schedule.grad_accum=2, on 1 GPU schedule.grad_accum=8. 300 queries, focal loss (2, 5, 2 for
class / L1 / GIoU, the same matching costs), auxiliary decoder losses. Evaluation: short side 800 (max 1333),
top-100 over queries x classes, pycocotools bbox AP; results do not depend on data.val_batch_size.
"""
from tasks.common.config import Config, OptimizerConfig, RuntimeConfig, ScheduleConfig
from tasks.detection.presets import coco, deformable_detr

config = Config(
    task="detection",
    model=deformable_detr("pvt_v2_b2", num_classes=91, num_queries=300, backbone_weights="OpenGVLab/pvt_v2_b2",
                          backbone_args={"drop_path_rate": 0.1}),
    data=coco("data/coco", batch_size=4, val_batch_size=2, num_workers=4),
    optimizer=OptimizerConfig(
        name="adamw",
        lr=2e-4,
        weight_decay=1e-4,
        lr_mults={"backbone": 0.1, "sampling_offsets": 0.1, "reference_points": 0.1},
    ),
    schedule=ScheduleConfig(
        policy="step",
        epochs=50,
        epoch_milestones=(40,),
        gamma=0.1,
        clip_grad=0.1,
        total_batch=32,
        eval_interval=5000,
        checkpoint_interval=2000,
        log_interval=50,
    ),
    runtime=RuntimeConfig(seed=42, device="auto"),
)
