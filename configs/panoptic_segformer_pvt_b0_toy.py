"""Toy run: Panoptic SegFormer on PVTv2-b0 from scratch on synthetic scenes (three textured shapes as things; sand,
sky and floor as stuff) written in the COCO panoptic layout under data/toy/panoptic/ on first use.
A small network (width 128, 30 queries, 2 encoder + 2 location-decoder layers, 2 + 2 mask-decoder layers), the
authors' losses, matching (one query per object into the mask decoder) and merging thresholds, weight decay on
every parameter, 200 iterations of batch 8 at 112-144 px.
Measured (the whole command, data writing included): PQ 0.688, PQ_th 0.500, PQ_st 0.876 on the 50 validation
scenes (PQ 0.651 at iteration 100) in 20 min 26 s wall on a shared 2-core machine (load average 15-19, the process
got 27% of one core with OMP_NUM_THREADS=1: 338 CPU-seconds in all).
"""
from tasks.common.config import Config, RuntimeConfig, adamw, poly
from tasks.panoptic.presets import PanopticSegFormerModel, ToyData

config = Config(
    task="panoptic",
    model=PanopticSegFormerModel(
        backbone="pvt_v2_b0",
        num_things_classes=3,  # circle, square, triangle (category ids 1, 3, 7)
        num_stuff_classes=3,  # sand, sky, floor (154, 187, 190)
        num_queries=30,
        hidden_dim=128,
        enc_layers=2,
        dec_layers=2,
        dim_feedforward=512,
        dropout=0.0,
        thing_mask_layers=2,
        stuff_mask_layers=2,
    ),
    data=ToyData(
        root="data/toy/panoptic",
        num_train=300,
        num_val=50,
        size=(128, 128),
        scales=(112, 128, 144),
        max_size=200,
        crop_resize=(112, 128),
        crop_size=(96, 128),
        test_size=128,
        batch_size=8,
        val_batch_size=1,
        num_workers=2,
    ),
    optimizer=adamw(lr=5e-4, weight_decay=1e-4, decay_norm_and_bias=True,  # the authors': decay on every parameter
                    lr_mults={"sampling_offsets": 0.1, "reference_points": 0.1}),
    schedule=poly(max_iters=200, warmup_iters=20, clip_grad=0.1, eval_interval=100, checkpoint_interval=100, log_interval=10),
    runtime=RuntimeConfig(seed=0, device="cpu"),
)
