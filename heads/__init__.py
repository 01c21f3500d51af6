"""Task heads: each takes ``in_channels: Sequence[int]`` and a sequence of feature maps."""
