"""GLPN decoder on PVTv2-b4, NYU Depth v2: the GLPN recipe (vinvino02/GLPDepth, NYU).

Data: the GLPDepth layout under data/nyu/nyu_depth_v2/ (the BTS "sync" training scenes, official_splits/test/)
with GLPDepth's list files (code/dataset/filenames/nyudepthv2/{train,test}_list.txt: 24,231 / 654 pairs).
Weights: the ImageNet-1k PVTv2-b4 release by hub id (downloaded once into the Hugging Face cache); a local
file or folder works too and wins.

Adam without weight decay; the one-cycle schedule 3e-5 -> 1e-4 -> 3e-5 (power 0.9) spans the real number of
iterations: 25 epochs x (training pairs // total batch), counted from the list when training starts (the
original hard-codes 2019 iterations per epoch). Total batch 12 = data.batch_size x processes x
schedule.grad_accum (e.g. 4 GPUs: --cfg-options data.batch_size=3). Evaluation: full 480x640, Eigen crop,
1e-3 < depth < 10 m, metrics per image then averaged; data.test_flip=True adds flip-averaged metrics.
"""
from tasks.common.config import Config, OptimizerConfig, RuntimeConfig, ScheduleConfig
from tasks.depth.presets import glpn, nyu

config = Config(
    task="depth",
    model=glpn("pvt_v2_b4", max_depth=10.0, backbone_weights="OpenGVLab/pvt_v2_b4"),
    data=nyu(
        "data/nyu",
        train_list="data/nyu/filenames/train_list.txt",
        test_list="data/nyu/filenames/test_list.txt",
        crop=(448, 576),
        batch_size=12,
        num_workers=4,
    ),
    optimizer=OptimizerConfig(name="adam", lr=1e-4, weight_decay=0.0),
    schedule=ScheduleConfig(
        policy="onecycle",
        epochs=25,
        onecycle_start_ratio=0.3,  # 3e-5 / 1e-4
        onecycle_peak=0.5,
        power=0.9,
        total_batch=12,
        eval_interval=2000,
        checkpoint_interval=2000,
        log_interval=50,
    ),
    runtime=RuntimeConfig(seed=0, device="auto"),
)
