"""What every task shares: configs, the training engine, checkpoints, distributed helpers."""
