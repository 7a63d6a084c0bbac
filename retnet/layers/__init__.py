"""Neural-network layers: relative position, norms, FFNs and multi-scale retention."""

from .ffn import FeedForward, build_ffn
from .norm import HeadNorm, RMSNorm, build_norm
from .position import apply_rotation, rotation_frequencies
from .retention import MultiScaleRetention

__all__ = [
    "FeedForward",
    "HeadNorm",
    "MultiScaleRetention",
    "RMSNorm",
    "apply_rotation",
    "build_ffn",
    "build_norm",
    "rotation_frequencies",
]
