"""PVTv2-b2 image classifier on ImageNet-1K from scratch: the authors' recipe (whai362/PVT classification, which
is DeiT's): AdamW, lr 5e-4 x total batch / 512 = 1e-3, weight decay 0.05 (none on norms and biases), 300 epochs
cosine to 1e-5 after 5 warm-up epochs from 1e-6, label smoothing 0.1, MixUp 0.8 / CutMix 1.0, RandAugment m9
(n2), random erasing 0.25, bicubic RandomResizedCrop 224, drop path 0.1 (0.3 and clip_grad=1.0 for b3-b5).
The published result is 82.0 top-1 (b2).

Data: data/imagenet/{train,val}/<wnid>/*.JPEG (the validation images sorted into wnid folders).
Evaluation: DeiT's protocol — short side to 256 (224 / 0.875) bicubic, centre crop 224, ImageNet mean/std.
Augmentation differences from timm's rand-m9-mstd0.5-inc1 are listed in tasks/classification/transforms.py.

Total batch 1024 = data.batch_size x processes x schedule.grad_accum. The paper: 8 GPUs x 128. Fewer devices:
  4 GPUs: --cfg-options data.batch_size=128 schedule.grad_accum=2
  1 GPU:  --cfg-options data.batch_size=128 schedule.grad_accum=8
The run warns when the total differs from 1024 (then also scale optimizer.lr by deit_lr(total)).
"""
from tasks.classification.presets import classifier, cosine_epochs, deit_lr, imagenet
from tasks.common.config import Config, RuntimeConfig, adamw

TOTAL_BATCH = 1024

config = Config(
    task="classification",
    model=classifier("pvt_v2_b2", num_classes=1000),  # drop path 0.1 (drop_path_for: 0.3 for b3-b5)
    data=imagenet("data/imagenet", batch_size=128, val_batch_size=128, num_workers=10),
    optimizer=adamw(lr=deit_lr(TOTAL_BATCH), weight_decay=0.05),
    schedule=cosine_epochs(
        300, warmup_epochs=5, total_batch=TOTAL_BATCH, lr=deit_lr(TOTAL_BATCH), warmup_lr=1e-6, min_lr=1e-5,
        clip_grad=None,  # 1.0 for b3-b5
        eval_interval=1251, checkpoint_interval=1251, log_interval=50,  # one ImageNet epoch = 1251 iterations
    ),
    runtime=RuntimeConfig(seed=0, device="auto", amp="bf16"),
)
