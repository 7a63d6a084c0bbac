"""Neural-network layers: relative position, norms, FFNs and multi-scale retention."""

from .ffn import FeedForward, build_ffn
from .norm import HeadNorm, RMSNorm, build_norm
from .position import RotationTable, apply_rotation, rotation_frequencies, rotation_table
from .retention import MultiScaleRetention

__all__ = [
    "FeedForward",
    "HeadNorm",
    "MultiScaleRetention",
    "RMSNorm",
    "RotationTable",
    "apply_rotation",
    "build_ffn",
    "build_norm",
    "rotation_frequencies",
    "rotation_table",
]
