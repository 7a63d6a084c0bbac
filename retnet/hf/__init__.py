"""Optional Hugging Face ``transformers`` adapters (``pip install 'retnet[hf]'``).

Call :func:`register_auto_classes` once to make ``AutoConfig`` / ``AutoModelForCausalLM`` know ``"retnet"``.
"""

from .configuration import RetNetHFConfig
from .modeling import RetNetHFForCausalLM, register_auto_classes

__all__ = ["RetNetHFConfig", "RetNetHFForCausalLM", "register_auto_classes"]
