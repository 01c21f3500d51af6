"""Panoptic segmentation: Panoptic SegFormer on any registered backbone, COCO panoptic data, PQ."""
from tasks.common.check_data import Release
from tasks.common.export import ExportBenchmark
from tasks.common.quantize import Int8Spec
from tasks.common.registry import TaskSpec, register_task

from .check import (CHECKS, COCO_PANOPTIC_CONTENTS, COCO_PANOPTIC_COUNTS, COCO_PANOPTIC_NAME, COCO_PANOPTIC_STUFF,
                    COCO_PANOPTIC_THINGS, summarize_samples)
from .evaluator import category_agreement
from .losses import PanopticCriterion
from .matcher import MaskHungarianMatcher, QueryFilter
from .model import EXPORT_OUTPUTS, PanopticSegFormer
from .inference import MergeOptions, merge, post_process
from .presets import CocoPanopticData, PanopticSegFormerModel
from .task import PanopticTask
from .visualize import save_prediction_png

__all__ = ["MaskHungarianMatcher", "MergeOptions", "PanopticCriterion", "PanopticSegFormer", "QueryFilter", "merge",
           "post_process"]


def _official_coco(data: CocoPanopticData) -> bool:
    """CocoPanopticData also reads a user's own data in the COCO panoptic format: only COCO's files are the release."""
    anns = (data.train_ann.replace("\\", "/"), data.val_ann.replace("\\", "/"))
    return anns == ("annotations/panoptic_train2017.json", "annotations/panoptic_val2017.json")


register_task(TaskSpec(
    name="panoptic",
    task=PanopticTask,
    model=PanopticSegFormer,
    model_options=PanopticSegFormerModel,
    picture=save_prediction_png,
    export_outputs=EXPORT_OUTPUTS,  # the network up to the mask-wise merging (predict merges them)
    releases=(Release(CocoPanopticData, COCO_PANOPTIC_NAME, COCO_PANOPTIC_COUNTS, COCO_PANOPTIC_CONTENTS,
                      _official_coco, COCO_PANOPTIC_THINGS + COCO_PANOPTIC_STUFF),),
    summarize=summarize_samples,
    checks=CHECKS,  # the ground truth: images without annotations, categories, PNG ids vs segments_info
    # as detection (boxes, reference points, sampling locations), and the mask and stuff heads
    int8=Int8Spec(category_agreement, "pixel category agreement", 0.9,
                  float_ops=("Softmax", "LayerNormalization", "GridSample"),
                  float_modules=("*sampling_offsets", "*attention_weights", "*reference_points", "*bbox_embed*",
                                 "*class_embed*", "*cls_stuff_branches*", "*.linear*")),
    benchmark=ExportBenchmark({"backbone": "pvt_v2_b5", "num_things_classes": 80, "num_stuff_classes": 53},
                              (512, 672)),  # COCO panoptic, short side 512
))
