"""Data: LLaVA-format datasets, exact label masks, collation."""

from .dataset import DataConfig, LlavaCollator, LlavaDataset, read_records
from .preprocess import IGNORE_INDEX, SampleError, tokenize_conversation

__all__ = ["DataConfig", "IGNORE_INDEX", "LlavaCollator", "LlavaDataset", "SampleError", "read_records",
           "tokenize_conversation"]  # fmt: skip
