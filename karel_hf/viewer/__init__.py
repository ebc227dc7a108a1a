"""The trace viewer: a reproduction's programs, robot states and probe predictions, step by step.

- `data`: `build_bundle(run_dir)`, everything the viewer shows as one JSON-ready dict, read from
  the files `karel-hf reproduce` saved (results.json, evaluations/, the checkpoint list); the
  robot's states come from the Karel interpreter;
- `views`: what one screen shows (`view`) and its HTML/SVG, pure functions of a bundle (standard
  library only: the Space ships it as is);
- `export`: `export_html(bundle, out_dir)`, one self-contained static page (`viewer.js`, the
  JavaScript twin of `views`, and the bundle inlined);
- `app`: `build_app(bundle)` / `launch(...)`, the Gradio app (`pip install 'karel_hf[viewer]'`);
  it is also the Space's app.py (`karel-hf push viewer`).

`karel-hf view RUN_DIR` serves the app on 127.0.0.1; `karel-hf view RUN_DIR --export DIR` writes
the page. Importing this package loads neither gradio nor the bundle's dependencies.
"""

from importlib import import_module

_LAZY = {
    "build_bundle": "data",
    "check_run_dir": "data",
    "RunDirError": "data",
    "DEFAULT_MAX_SPECS": "data",
    "view": "views",
    "export_html": "export",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
