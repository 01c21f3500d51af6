"""Toy run: SegFormer on PVTv2-b0 from scratch on synthetic scenes (textured circles, squares and triangles
on a tiled floor) that are written in the ADE20K layout under data/toy/segmentation/ on first use.
About 30 seconds on 2 idle CPU cores (plus ~5 s to write the data once); mIoU about 0.9 (at least 0.6)
on the 50 validation images.
"""
from tasks.common.config import Config, RuntimeConfig, adamw, poly
from tasks.segmentation.presets import SegFormerModel, ToyData

config = Config(
    task="segmentation",
    model=SegFormerModel(backbone="pvt_v2_b0", num_classes=4, decoder_dim=128, dropout=0.0),
    data=ToyData(
        root="data/toy/segmentation",
        num_train=300,
        num_val=50,
        size=(128, 128),
        crop=128,
        scale=(256, 128),
        ratio_range=(0.75, 1.5),
        cat_max_ratio=1.0,
        test_scale=(512, 128),  # the toy images are 128 x 128: evaluated at their own size
        batch_size=8,
        num_workers=2,
    ),
    optimizer=adamw(lr=1e-3, weight_decay=0.01),
    schedule=poly(max_iters=150, warmup_iters=15, eval_interval=50, checkpoint_interval=50, log_interval=10),
    runtime=RuntimeConfig(seed=0, device="cpu"),
)
