"""karel_hf: a Hugging Face-native reproduction of Jin & Rinard, "Evidence of Meaning in Language Models Trained on Programs"."""

__version__ = "0.1.0"

CITATION = """\
@inproceedings{jin2024emergent,
  title     = {Emergent Representations of Program Semantics in Language Models Trained on Programs},
  author    = {Jin, Charles and Rinard, Martin},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning},
  year      = {2024},
  note      = {arXiv:2305.11169 (first version: Evidence of Meaning in Language Models Trained on Programs)}
}
"""
