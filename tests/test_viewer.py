"""The trace viewer (`karel_hf.viewer`, `karel-hf view`, `karel-hf push viewer`) on the `tiny` reproduction.

- the bundle: what it shows agrees with the saved files and with the Karel interpreter;
- the static page opened in headless Chromium (Debian's `chromium`, driven by playwright through
  the system browser; skipped with the reason when either is missing): grids and programs
  visible, stepping changes the shown state, the page's JavaScript computes the same view as
  `views.view`, nothing is fetched, the screenshot is not blank;
- the Gradio app: `karel-hf view RUN_DIR --port P` in a subprocess, queried with gradio_client;
- the Space: the dry-run tree, its app served from that tree with karel_hf unimportable and
  queried with gradio_client, and a push through tests/hub_emulator.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hub_emulator import HubEmulator
from karel_hf import hub
from karel_hf.karel.interpreter import execute
from karel_hf.karel.program import parse
from karel_hf.karel.world import World
from karel_hf.metrics.space import requirement_names
from karel_hf.viewer import views
from karel_hf.viewer.data import RunDirError, build_bundle, bundle_json, check_run_dir
from karel_hf.viewer.export import export_html

CHROMIUM = os.environ.get("KAREL_HF_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
FAKE_TOKEN = "hf_emulatorFAKEtoken0123456789abcdefXYZ"
REPO = "karel-test/karel-viewer"
# positions compared across the implementations: (checkpoint, spec, family, step, offset)
POSITIONS = [(2, 0, "generated", 3, "current"), (1, 5, "teacher_forced", 2, "next1"), (0, 11, "generated", 0, "prev2"),
             (2, 7, "teacher_forced", 99, "next2")]


@pytest.fixture(scope="module")
def bundle(tiny_run) -> dict:
    return build_bundle(tiny_run, max_specs=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean(value):
    """JSON round trip: what a client or the page sees (tuples as lists, no NaN)."""
    return json.loads(json.dumps(value))


# ------------------------------------------------------------------------------------ bundle
def test_bundle_matches_saved_files_and_the_interpreter(tiny_run, bundle):
    results = json.loads((tiny_run / "results.json").read_text())
    assert [c["step"] for c in bundle["checkpoints"]] == results["steps"] == [0, 10, 20]
    assert [c["revision"] for c in bundle["checkpoints"]] == ["step-0", "step-10", "step-20"]
    assert bundle["tasks"] == [f"direction_{i}" for i in range(5)] and len(bundle["specs"]) == 24
    specs = {int(i): (p, np.asarray(x)) for i, p, x in zip(*pq.read_table(
        tiny_run / "evaluations" / "test_specs.parquet", columns=["id", "program", "inputs"]).to_pydict().values())}
    for c, e in enumerate(results["checkpoints"]):
        point = bundle["checkpoints"][c]
        assert point["accuracy"] == e["generation"]["accuracy"]
        gain = e["probes"]["teacher_forced"]["next1"]["conditional_gain"]
        assert point["probes"]["teacher_forced"]["next1"]["conditional_gain"] == pytest.approx(gain, nan_ok=True)
        written = pq.read_table(tiny_run / "evaluations" / f"step-{e['step']}.programs.parquet").to_pandas()
        for s, spec in enumerate(bundle["specs"]):
            program = spec["programs"][bundle["generated"][c][s]]
            saved = written[written["example_id"] == spec["id"]].iloc[0]
            assert all(program["correct"][:5]) == saved["correct"] and all(program["correct"]) == saved["correct_all"]
            assert len(program["actions"]) == saved["num_actions"]
        # every saved row's true label is the direction the interpreter gives at s_(k+o)
        for family in ("generated", "teacher_forced"):
            rows = bundle["rows"][c][family]
            names = [name for _, name in bundle["offsets"]]
            assert len(rows) == 5 * sum(e["probes"][family][n]["num_test"] for n in names)
            for s, k, offset, task, label, probe, prompt_only, conditional in rows:
                spec = bundle["specs"][s]
                program = spec["programs"][spec["reference"] if family == "teacher_forced" else bundle["generated"][c][s]]
                assert program["states"][task][k + offset][2] == label
    # the states are the interpreter's worlds, drawn as text
    for spec in bundle["specs"][:6]:
        text, inputs = specs[spec["id"]]
        for i in (0, 7):
            world = World.from_view_codes(inputs[i])
            final = execute(parse(text), world, trace=True)
            reference = spec["programs"][spec["reference"]]
            for k, state in enumerate([world, *final.states]):
                shown = views.grid_text(views.state_grid(spec, reference, i, k))
                interior = "\n".join(row[1:-1] for row in state.to_ascii().split("\n")[1:-1])
                assert shown == interior
    assert json.loads(bundle_json(bundle)) == _clean(bundle)


def test_view_steps_through_the_program(bundle):
    spec = next(i for i, s in enumerate(bundle["specs"]) if s["length"] >= 3)
    first = views.view(bundle, 2, spec, "teacher_forced", 0)
    assert first["step"] == 0 and first["action"] is None and first["probes"] == []
    assert first["grids"][0]["state_text"] == views.grid_text(bundle["specs"][spec]["inputs"][0])
    n = first["num_actions"]
    assert n == bundle["specs"][spec]["length"]
    shown = [views.view(bundle, 2, spec, "teacher_forced", k)["grids"] for k in range(n + 1)]
    assert any(a != b for a, b in zip(shown, shown[1:]))  # some action changes some input's state
    last = views.view(bundle, 2, spec, "teacher_forced", n + 5)  # clamped
    assert last["step"] == n and last["action"] == first["programs"]["reference"]["actions"][-1]
    assert all(g["state_text"] == views.grid_text(g["output"]) for g in last["grids"])  # the reference is right
    middle = views.view(bundle, 2, spec, "teacher_forced", 1)
    by_offset = {p["name"]: p for p in middle["probes"] if p["pair"] == 0}
    assert by_offset["current"]["target_step"] == 1 and by_offset["prev1"]["note"].startswith("the input grid")
    html = views.grids_html(middle) + views.programs_html(middle) + views.probes_html(middle) + views.summary_html(middle)
    assert html.count("<svg") == 3 * 10 + 1 and 'class="current"' in html and "step 20" in html
    with pytest.raises(ValueError, match="family"):
        views.view(bundle, 0, 0, "forced")
    with pytest.raises(ValueError, match="spec 12345 is not"):
        views.spec_index(bundle, 12345)


def test_bundle_caps_specs_keeping_those_with_rows(tiny_run, bundle):
    small = build_bundle(tiny_run, max_specs=5)
    counts = {s["id"]: sum(1 for c in bundle["rows"] for f in c.values() for r in f if r[0] == i)
              for i, s in enumerate(bundle["specs"])}
    chosen = [s["id"] for s in small["specs"]]
    assert len(chosen) == 5 and chosen == sorted(chosen)
    assert min(counts[i] for i in chosen) >= max(c for i, c in counts.items() if i not in chosen)
    with pytest.raises(ValueError, match="max_specs"):
        build_bundle(tiny_run, max_specs=-1)


def test_bad_run_dirs_fail_with_one_line(tiny_run, tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        check_run_dir(tmp_path / "nowhere")
    with pytest.raises(RunDirError, match="results.json not found"):
        check_run_dir(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(RunDirError, match="not valid JSON"):
        check_run_dir(tmp_path)
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(tiny_run / "results.json", copy / "results.json")
    with pytest.raises(RunDirError, match="holds no step-N.json"):
        check_run_dir(copy)
    shutil.copytree(tiny_run / "evaluations", copy / "evaluations")
    (copy / "evaluations" / "step-10.rows.parquet").unlink()
    with pytest.raises(RunDirError, match=r"step-10.rows.parquet not found .*--preset tiny .*--stages evaluate"):
        check_run_dir(copy)
    result = subprocess.run([sys.executable, "-m", "karel_hf.cli", "view", str(copy), "--export", str(tmp_path / "page")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "step-10.rows.parquet not found" in result.stderr
    assert not (tmp_path / "page").exists()


# ------------------------------------------------------------------------------- static page
def _browser():
    """A playwright Chromium context on Debian's browser, or a skip naming what is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install it (Debian: `apt-get install -y chromium`) or set KAREL_HF_CHROMIUM")
    return sync_api


def test_static_page_in_chromium(tiny_run, bundle, tmp_path):
    sync_api = _browser()
    page_path = export_html(bundle, tmp_path / "page")
    text = page_path.read_text()
    assert "<script src" not in text and "<link" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")  # self-contained: nothing to fetch
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=CHROMIUM_FLAGS,
                                                       viewport={"width": 1300, "height": 1000})
        try:
            page = context.new_page()
            errors, requests = [], []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("request", lambda req: requests.append(req.url))
            page.goto(page_path.as_uri())
            page.wait_for_selector("#grids svg.grid")
            assert page.locator("#grids svg.grid").count() == 3 * 10  # input, state, output per pair
            assert page.locator("#grids svg.grid").first.is_visible()
            assert page.locator("#programs pre").count() == 2 and "def run() {" in page.inner_text("#programs")
            assert page.locator("#programs pre").first.is_visible()
            assert page.inner_text("#step") == "0"

            # step through the teacher-forced reference of a 3+ action spec: the shown state changes
            spec = next(i for i, s in enumerate(bundle["specs"]) if s["length"] >= 3)
            page.select_option("#spec", str(spec))
            page.select_option("#family", "teacher_forced")
            state = page.locator("#grids figure.state svg")
            before = [state.nth(i).get_attribute("data-text") for i in range(10)]
            shown = [before]
            for _ in range(3):
                page.click("#next-action")
                shown.append([state.nth(i).get_attribute("data-text") for i in range(10)])
            assert page.inner_text("#step") == "3"
            assert any(a != b for a, b in zip(shown, shown[1:]))
            expected = [[g["state_text"] for g in views.view(bundle, 2, spec, "teacher_forced", k)["grids"]]
                        for k in range(4)]
            assert shown == expected
            assert page.locator("#probes tr.scored").count() == sum(
                p["scored"] for p in views.view(bundle, 2, spec, "teacher_forced", 3)["probes"])
            assert "program, after action 3 of" in page.inner_text("#step-info")
            page.click("#previous-action")
            assert page.inner_text("#step") == "2"
            page.evaluate("() => { const s = document.getElementById('checkpoint'); s.value = '0'; "
                          "s.dispatchEvent(new Event('input')); }")  # the slider, moved as a drag moves it
            assert "training step 0" in page.inner_text("#checkpoint-info")

            # the page's script (viewer.js) computes what views.py computes
            for position in POSITIONS:
                got = page.evaluate("(a) => { const k = window.karelViewer; return k.view(k.bundle, ...a); }",
                                    list(position))
                assert got == _clean(views.view(bundle, *position)), position

            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            assert not errors and all(url.startswith("file://") for url in requests), (errors, requests)
        finally:
            context.close()
    import matplotlib.image

    pixels = matplotlib.image.imread(tmp_path / "page.png")[..., :3]
    assert pixels.shape[0] > 800 and pixels.std() > 0.1
    assert (pixels.min(axis=2) < 0.9).mean() > 0.05  # not blank: a good part of the page is drawn


# --------------------------------------------------------------------------------- gradio
def _serve(command: list[str], cwd=None, env=None) -> tuple[subprocess.Popen, str]:
    """Start a server process and wait for the URL it prints (or fail with its output)."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 240
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"(http://127\.0\.0\.1:\d+/?)", line)
        if found:
            return process, found.group(1)
    process.kill()
    raise AssertionError("the server printed no URL:\n" + "".join(lines)[-3000:])


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _query(url: str, bundle: dict) -> None:
    """The `/view` endpoint answers what `views.view` computes; `/render` draws it."""
    client = pytest.importorskip("gradio_client").Client(url, verbose=False)
    for checkpoint, spec, family, step, offset in POSITIONS:
        got = client.predict(checkpoint, bundle["specs"][spec]["id"], family, step, offset, api_name="/view")
        assert got == _clean(views.view(bundle, checkpoint, spec, family, step, offset))
    spec = bundle["specs"][3]
    step, info, where, grids, programs, probes, summary = client.predict(
        2, spec["id"], "generated", 1, "current", api_name="/render")
    assert step == 1 and grids.count("<svg") == 30 and "def run()" in programs and f"spec id {spec['id']}" in info
    assert "<table>" in probes and "<svg" in summary and "after action 1 of" in where


def test_gradio_app_served_and_queried(tiny_run, bundle):
    pytest.importorskip("gradio", reason="the Gradio app needs gradio: pip install -e '.[viewer]'")
    port = _free_port()
    process, url = _serve([sys.executable, "-m", "karel_hf.cli", "view", str(tiny_run), "--port", str(port)])
    try:
        assert url.rstrip("/") == f"http://127.0.0.1:{port}"
        _query(url, bundle)
    finally:
        _stop(process)


# ---------------------------------------------------------------------------------- Space
SPACE_FILES = {"README.md", "app.py", "views.py", "viewer.css", "viewer_data.json", "requirements.txt"}
SERVE_SPACE = r"""
import sys
sys.modules["karel_hf"] = None  # the Space has no karel_hf: any import of it fails
import app
demo = app.build_app(app.views.load_bundle("viewer_data.json"))
_, url, _ = demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), prevent_thread_lock=True, quiet=True,
                        show_error=True, css=app.css(), ssr_mode=False)
assert not [m for m in sys.modules if m.startswith("karel_hf") and sys.modules[m] is not None]
print("serving", url, flush=True)
demo.block_thread()
"""


@pytest.fixture(scope="module")
def space_tree(tiny_run, tmp_path_factory) -> Path:
    plan = hub.plan_viewer_push(tiny_run, REPO, max_specs=0, model_repo="karel-test/karel-gpt2")
    return hub.write_dry_run(plan, tmp_path_factory.mktemp("space") / "dry") / "main"


def test_space_dry_run_tree(space_tree, bundle):
    assert {p.name for p in space_tree.iterdir()} == SPACE_FILES
    card = (space_tree / "README.md").read_text()
    meta = hub._front_matter(card)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] == ["karel-test/karel-gpt2"]
    assert 'revision="step-20"' in card and "24 test specs" in card
    # from the package index, gradio alone (the metric Spaces' rule: no URL, no path, no karel_hf)
    assert requirement_names((space_tree / "requirements.txt").read_text()) == ["gradio"]
    shipped = json.loads((space_tree / "viewer_data.json").read_text())
    assert shipped["model_repo"] == "karel-test/karel-gpt2"
    assert {k: v for k, v in shipped.items() if k != "model_repo"} == {
        k: v for k, v in _clean(bundle).items() if k != "model_repo"}
    source = Path(views.__file__).parent
    for name in ("app.py", "views.py", "viewer.css"):
        assert (space_tree / name).read_bytes() == (source / name).read_bytes()
    with pytest.raises(ValueError, match="--repo_id"):
        hub.plan_viewer_push(space_tree, "no-namespace")


def test_space_app_runs_without_karel_hf(space_tree, bundle):
    pytest.importorskip("gradio", reason="the Space's app needs gradio: pip install -e '.[viewer]'")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process, url = _serve([sys.executable, "-c", SERVE_SPACE, str(_free_port())], cwd=space_tree, env=env)
    try:
        _query(url, bundle)
    finally:
        _stop(process)


def test_space_push_through_the_test_hub(tiny_run, space_tree, tmp_path):
    server = HubEmulator(token=FAKE_TOKEN)
    server.start()
    try:
        env = {k: v for k, v in os.environ.items()
               if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
        env.update(HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"), HF_TOKEN=FAKE_TOKEN, HF_HUB_DISABLE_XET="1",
                   HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1,localhost")
        result = subprocess.run([sys.executable, "-m", "karel_hf.cli", "push", "viewer", str(tiny_run), "--repo_id", REPO,
                                 "--max_specs", "0", "--model_repo", "karel-test/karel-gpt2"],
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"published space {REPO}@main" in result.stdout and FAKE_TOKEN not in result.stdout + result.stderr
        stored = server.repos[("space", REPO)]
        assert stored.sdk == "gradio"
        files = stored.commits[stored.refs["main"]].files
        assert set(files) - {".gitattributes"} == SPACE_FILES
        fetch = ("import sys\nfrom huggingface_hub import hf_hub_download\n"
                 "print(open(hf_hub_download(sys.argv[1], 'viewer_data.json', repo_type='space')).read())")
        got = subprocess.run([sys.executable, "-c", fetch, REPO], env=env, capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, got.stderr[-3000:]
        assert got.stdout.strip() == (space_tree / "viewer_data.json").read_text()
    finally:
        server.stop()
