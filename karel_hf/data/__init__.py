"""The Karel corpus as Hugging Face data: text format, `datasets` builder, Parquet export, and which
programs the splits share (`overlap`)."""

from .builder import BUILDER_CONFIGS, CONFIG_NAMES, KarelBuilder, KarelConfig, get_config, load_karel
from .formatting import (
    Sample,
    SampleFormatError,
    format_prompt,
    format_sample,
    format_samples,
    parse_sample,
    split_sample,
)
from .overlap import ProgramOverlap, program_overlap

__all__ = [
    "BUILDER_CONFIGS", "CONFIG_NAMES", "KarelBuilder", "KarelConfig", "ProgramOverlap", "Sample", "SampleFormatError",
    "format_prompt", "format_sample", "format_samples", "get_config", "load_karel", "parse_sample", "program_overlap",
    "split_sample",
]
