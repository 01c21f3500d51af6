"""Deformable DETR (Zhu et al., ICLR 2021): multi-scale deformable attention, the deformable transformer
and the detection head. Pure PyTorch; no compiled op."""
from .ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_bag
from .position_encoding import PositionEmbeddingSine, box_sine_embedding
from .transformer import DeformableDETRConfig, DeformableDETRHead, check_architecture, inverse_sigmoid

__all__ = [
    "DeformableDETRConfig",
    "DeformableDETRHead",
    "MSDeformAttn",
    "PositionEmbeddingSine",
    "box_sine_embedding",
    "check_architecture",
    "inverse_sigmoid",
    "ms_deform_attn",
    "ms_deform_attn_bag",
]
