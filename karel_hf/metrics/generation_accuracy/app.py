from pathlib import Path

import evaluate
from evaluate.utils import launch_gradio_widget

# The script beside this file: the same code in a Hub Space (repo root) and in the karel_hf package.
module = evaluate.load(str(Path(__file__).resolve().with_name("generation_accuracy.py")))
launch_gradio_widget(module)
