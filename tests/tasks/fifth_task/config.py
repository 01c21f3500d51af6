"""The fifth task's config: importing its package registers the task (nothing in tasks/ names it)."""
from tasks.common.config import Config, RuntimeConfig, adamw, poly
from tests.tasks.fifth_task.task import ForegroundData, ForegroundModel

config = Config(
    task="foreground",
    model=ForegroundModel(),
    data=ForegroundData(),
    optimizer=adamw(lr=1e-2),
    schedule=poly(max_iters=4, eval_interval=4, checkpoint_interval=4, log_interval=2),
    runtime=RuntimeConfig(seed=0, device="cpu"),
)
