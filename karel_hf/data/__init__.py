"""The Karel corpus as Hugging Face data: text format, `datasets` builder, Parquet export."""

from .builder import BUILDER_CONFIGS, CONFIG_NAMES, KarelBuilder, KarelConfig, get_config, load_karel
from .formatting import Sample, SampleFormatError, format_prompt, format_sample, parse_sample, split_sample

__all__ = [
    "BUILDER_CONFIGS", "CONFIG_NAMES", "KarelBuilder", "KarelConfig", "Sample", "SampleFormatError",
    "format_prompt", "format_sample", "get_config", "load_karel", "parse_sample", "split_sample",
]
