"""The viewer as a Gradio app: `build_app(bundle)` lays out the controls over `views`.

Gradio and the standard library only, no karel_hf import beside `views`: `karel-hf push viewer`
ships this file as the Space's app.py, with views.py, viewer.css and the bundle
(viewer_data.json) beside it, and `python app.py` there serves it (`karel-hf view RUN_DIR` serves
the same app from a run folder).

Controls: a checkpoint slider over every checkpoint, a test-spec dropdown, the probe family (it
also picks the stepped program: the generated one, or the reference for `teacher_forced`), the
offset whose curves the summary draws, and previous/next action buttons. Named API endpoints
(`gradio_client`): `/view` returns `views.view`'s dict for (checkpoint index, spec id, family,
actions taken, offset); `/render` returns the HTML panels.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no call home

import gradio as gr  # noqa: E402

if __package__:
    from . import views
else:  # run as the Space's app.py, views.py beside it
    import views  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
CSS_FILE = "viewer.css"
DATA_FILE = "viewer_data.json"


def css() -> str:
    return (HERE / CSS_FILE).read_text(encoding="utf-8")


def _spec_choices(bundle: dict) -> list[tuple[str, int]]:
    return [(f"spec {s['id']} · reference {s['length']} action{'s' if s['length'] != 1 else ''}", s["id"])
            for s in bundle["specs"]]


def build_app(bundle: dict) -> gr.Blocks:
    """The Blocks app over one bundle (not launched)."""
    last = len(bundle["checkpoints"]) - 1
    offsets = [name for _, name in bundle["offsets"]]

    def view(checkpoint: int, spec_id: int, family: str, step: int, offset: str) -> dict:
        """One screen of the viewer as JSON: grids, programs, state after `step` actions, probes, curves."""
        return views.view(bundle, int(checkpoint), views.spec_index(bundle, spec_id), family, int(step), offset)

    def render(checkpoint, spec_id, family, step, offset):
        v = view(checkpoint, spec_id, family, step, offset)
        return (v["step"], views.checkpoint_html(bundle, v), views.step_html(v), views.grids_html(v),
                views.programs_html(v), views.probes_html(v), views.summary_html(v))

    def previous(checkpoint, spec_id, family, step, offset):
        return render(checkpoint, spec_id, family, max(0, int(step) - 1), offset)

    def following(checkpoint, spec_id, family, step, offset):
        return render(checkpoint, spec_id, family, int(step) + 1, offset)

    with gr.Blocks(title=bundle["title"]) as demo:
        gr.Markdown(f"## {bundle['title']}\n"
                    "The robot's state on each input after each action of a program, what linear probes read from the "
                    "model's hidden state there (true direction vs probe vs the prompt-only control), and the run's "
                    "curves. Probes are scored on test rows whose state is neither the input nor the final one.")
        with gr.Row():
            checkpoint = gr.Slider(0, last, value=last, step=1, label="checkpoint (0 = first saved)")
            spec = gr.Dropdown(choices=_spec_choices(bundle), value=bundle["specs"][0]["id"], label="test spec")
        with gr.Row():
            family = gr.Radio(bundle["families"], value=bundle["families"][0],
                              label="probe family (generated: step the model's program; teacher_forced: the reference)")
            offset = gr.Radio(offsets, value="current", label="summary curves: offset")
        info = gr.HTML(elem_id="checkpoint-info")
        with gr.Row():
            back = gr.Button("◀ previous action", elem_id="previous-action")
            step = gr.Number(value=0, precision=0, minimum=0, label="actions taken (k)", elem_id="step")
            forward = gr.Button("next action ▶", elem_id="next-action")
        where = gr.HTML(elem_id="step-info")
        with gr.Row():
            with gr.Column(scale=3):
                grids = gr.HTML(elem_id="grids")
            with gr.Column(scale=2):
                programs = gr.HTML(elem_id="programs")
                probes = gr.HTML(elem_id="probes")
        summary = gr.HTML(elem_id="summary")

        inputs = [checkpoint, spec, family, step, offset]
        outputs = [step, info, where, grids, programs, probes, summary]
        for control in (checkpoint, spec, family, offset):
            control.change(render, inputs, outputs, api_visibility="undocumented")
        step.submit(render, inputs, outputs, api_visibility="undocumented")
        back.click(previous, inputs, outputs, api_visibility="undocumented")
        forward.click(following, inputs, outputs, api_visibility="undocumented")
        demo.load(render, inputs, outputs, api_name="render")
        gr.api(view, api_name="view")
    return demo


def launch(bundle: dict, host: str = "127.0.0.1", port: int | None = None) -> tuple:
    """Serve the app in a background thread; returns (Blocks, local URL). `Blocks.block_thread()`
    then waits until Ctrl+C, `Blocks.close()` stops it."""
    demo = build_app(bundle)
    _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, share=False,
                            show_error=True, css=css(), ssr_mode=False, footer_links=["api"])
    return demo, url


if __name__ == "__main__":  # the Space: serve the bundle beside this file
    build_app(views.load_bundle(HERE / DATA_FILE)).launch(css=css(), ssr_mode=False, show_error=True)
