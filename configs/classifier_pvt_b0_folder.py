"""Fine-tune an ImageNet-1K PVTv2-b0 classifier on your own classes: one folder per class.

Data: data/custom/train/<class>/<images> and data/custom/val/<class>/<images> (the same class folders; labels
follow the sorted folder names, as torchvision's ImageFolder). Set model.num_classes to their count.
Weights: the published ImageNet-1K PVTv2-b0 backbone by hub id (OpenGVLab/pvt_v2_b0; a local file or folder works
too); the 1000-class head is not used, the new head starts from scratch.
A fine-tuning recipe in DeiT's style at a small scale: AdamW 5e-4 x batch / 512 with the backbone at 0.1x, weight
decay 0.05, 30 epochs cosine after 2 warm-up epochs, RandAugment, MixUp/CutMix and label smoothing as in
pre-training but lighter (the dataset is smaller than ImageNet).
"""
from tasks.classification.presets import FolderData, cosine_epochs, deit_lr, ImageClassifierModel
from tasks.common.config import Config, RuntimeConfig, adamw

BATCH = 64
TRAIN_IMAGES = 10_000  # your training set's size: only used to count the warm-up in iterations

config = Config(
    task="classification",
    model=ImageClassifierModel(
        backbone="pvt_v2_b0", num_classes=10, backbone_args={"drop_path_rate": 0.1},
        backbone_weights="OpenGVLab/pvt_v2_b0",
    ),
    data=FolderData(
        train_dir="data/custom/train", val_dir="data/custom/val", mixup_alpha=0.2, cutmix_alpha=0.0,
        random_erasing=0.0, per_class=True, batch_size=BATCH, val_batch_size=64, num_workers=8,
    ),
    optimizer=adamw(lr=deit_lr(BATCH), weight_decay=0.05, lr_mults={"backbone": 0.1}),
    schedule=cosine_epochs(30, warmup_epochs=2, total_batch=BATCH, samples_per_epoch=TRAIN_IMAGES, lr=deit_lr(BATCH),
                           eval_interval=500, checkpoint_interval=500, log_interval=20),
    runtime=RuntimeConfig(seed=0, device="auto"),
)
