"""SegFormer all-MLP head on PVTv2-b2, ADE20K: the SegFormer recipe (NVlabs segformer.b2.512x512.ade.160k).

Data: ADEChallengeData2016 under data/ade/ (images/ and annotations/, training/ and validation/).
Weights: the ImageNet-1k PVTv2-b2 release by hub id (downloaded once into the Hugging Face cache; offline:
`hf download OpenGVLab/pvt_v2_b2` first). A local file or folder works too and wins.

Total batch 16 = data.batch_size x processes x schedule.grad_accum. The paper: 8 GPUs x 2. Fewer devices:
  4 GPUs: --cfg-options data.batch_size=4            (4 x 4 x 1)
  2 GPUs: --cfg-options data.batch_size=4 schedule.grad_accum=2
  1 GPU:  --cfg-options data.batch_size=4 schedule.grad_accum=4
The run warns when the total differs from 16. Evaluation: whole image, short side 512, sides rounded up to
multiples of 32 (the "AlignedResize" protocol behind SegFormer-B2's 46.5 mIoU).
"""
from tasks.common.config import Config, RuntimeConfig, adamw, poly
from tasks.segmentation.presets import ade20k, segformer

config = Config(
    task="segmentation",
    model=segformer("pvt_v2_b2", num_classes=150, drop_path_rate=0.1, backbone_weights="OpenGVLab/pvt_v2_b2"),
    data=ade20k("data/ade/ADEChallengeData2016", crop=512, batch_size=2, num_workers=4),
    optimizer=adamw(lr=6e-5, weight_decay=0.01, lr_mults={"head": 10.0}),  # no decay on norms and biases
    schedule=poly(
        max_iters=160_000,
        warmup_iters=1500,
        warmup_ratio=1e-6,
        power=1.0,
        total_batch=16,
        eval_interval=16_000,
        checkpoint_interval=4_000,
        log_interval=50,
    ),
    runtime=RuntimeConfig(seed=0, device="auto"),
)
