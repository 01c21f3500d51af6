"""Task models, losses, datasets and evaluators built on ``backbones`` and ``heads``."""
