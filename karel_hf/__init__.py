"""karel_hf."""
