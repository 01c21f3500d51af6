"""A fifth task defined outside ``tasks/``: binary foreground segmentation on synthetic discs.

The whole task is this package — model, engine task, config sections, data, picture — registered below with
one ``register_task``; nothing in the shared code names it. A config imports this package (see
``config.py``), and checkpoints record ``tests.tasks.fifth_task.model`` so the tools import it on load.
``tests/tools/test_fifth_task.py`` runs it through tools/train.py, test.py, infer.py and export.py.
"""
from tasks.common.registry import TaskSpec, register_task

from .model import ForegroundNet
from .task import ForegroundData, ForegroundModel, ForegroundTask, save_prediction_png, summarize_samples

register_task(TaskSpec(
    name="foreground",
    task=ForegroundTask,
    model=ForegroundNet,
    model_options=ForegroundModel,
    picture=save_prediction_png,
    export_outputs=("logits",),  # [B, 1, H/4, W/4]
    summarize=summarize_samples,
    predict_options=("flip",),
))
