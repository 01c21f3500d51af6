"""Object detection: Deformable-DETR on any registered backbone, COCO-format data, COCO evaluation."""
from tasks.common.check_data import Release
from tasks.common.export import ExportBenchmark
from tasks.common.quantize import Int8Spec
from tasks.common.registry import TaskSpec, register_task

from .datasets import CocoDetection, summarize_samples
from .evaluator import CocoEvaluator, box_agreement
from .losses import SetCriterion
from .matcher import HungarianMatcher
from .model import DeformableDETR
from .inference import post_process
from .presets import CocoData, DeformableDETRModel
from .task import DetectionTask
from .visualize import save_prediction_png
from .weights import PUBLISHED

__all__ = ["CocoDetection", "CocoEvaluator", "DeformableDETR", "HungarianMatcher", "SetCriterion", "post_process"]


def _official_coco(data: CocoData) -> bool:
    """CocoData also reads a user's own COCO-format json: only the 2017 annotation files are the release."""
    anns = (data.train_ann.replace("\\", "/"), data.val_ann.replace("\\", "/"))
    return anns == ("annotations/instances_train2017.json", "annotations/instances_val2017.json")


register_task(TaskSpec(
    name="detection",
    task=DetectionTask,
    model=DeformableDETR,
    model_options=DeformableDETRModel,
    picture=save_prediction_png,
    export_outputs=("pred_logits", "pred_boxes"),  # [B, Q, K] sigmoid logits, [B, Q, 4] normalised cxcywh
    releases=(Release(CocoData, "COCO 2017", (118_287, 5_000), "instances_{train,val}2017.json", _official_coco),),
    summarize=summarize_samples,
    published=PUBLISHED,
    picture_options=("threshold",),
    # boxes, reference points and sampling locations are regressed coordinates: int8 steps move them, and the
    # deformable sampling (GridSample / gathers) is not quantized; the class head is tiny
    int8=Int8Spec(box_agreement, "box/score agreement", 0.8,
                  float_ops=("Softmax", "LayerNormalization", "GridSample"),
                  float_modules=("*sampling_offsets", "*attention_weights", "*reference_points", "*bbox_embed*",
                                 "*class_embed*")),
    benchmark=ExportBenchmark({"backbone": "pvt_v2_b2", "num_classes": 91}, (512, 672)),  # a COCO photo, short side 512
))
