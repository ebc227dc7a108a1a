"""karel_hf: a Hugging Face-native reproduction of Jin & Rinard, "Evidence of Meaning in Language Models Trained on Programs"."""

__version__ = "0.1.0"
