"""What the viewer shows, as data and as HTML: pure functions of a viewer bundle (`data` builds it).

Standard library only, no karel_hf import: the Space ships this file as is beside its app.py
(`karel-hf push viewer`). Its twin is the static page's script (`viewer.js`, the same functions in
JavaScript over the same bundle); tests/test_viewer.py checks that the page computes the same
view as `view` here.

`view(bundle, checkpoint, spec, family, step, offset)` is one screen's content: the checkpoint,
the spec's input/output grids and the robot's state on each input after `step` actions of the
stepped program (the generated one for the `generated` family, the reference for
`teacher_forced`), both programs with per-pair correctness, the probes' predictions at every
offset against the true direction (`probe_rows`), and the curves over checkpoints of one probe
family (`curves`). `*_html` and `*_svg` draw it; CSS classes are those of viewer.css.

Probe rows (`probe_rows`): the model state m_k is taken where action k is emitted; the probe at
offset o reads the direction in s_(k+o), the state after k+o actions. A (k, o) has a saved
prediction only when it was a scored test row: 1 <= k+o <= n-1 with drop_last (neither the input
grid's state nor the final one), inside the row budget's subsample, and, generated, from a
program that gave trace rows.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

ARROWS = ("↑", "→", "↓", "←")  # directions 0..3 = north, east, south, west
ROBOT_CHARS = "^>v<"
CELL = 26  # grid cell size in pixels


# ------------------------------------------------------------------------------------ bundle
def load_bundle(path) -> dict:
    """A bundle saved as JSON (the Space's viewer_data.json)."""
    bundle = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(bundle, dict) or bundle.get("format") != 1:
        raise ValueError(f"{path} is not a karel_hf viewer bundle (format 1): rebuild it with `karel-hf push viewer`")
    return bundle


def spec_index(bundle: dict, spec_id: int) -> int:
    for i, spec in enumerate(bundle["specs"]):
        if spec["id"] == int(spec_id):
            return i
    known = [s["id"] for s in bundle["specs"]]
    raise ValueError(f"spec {spec_id} is not in this viewer's data (ids {known[0]}..{known[-1]}, {len(known)} specs)")


def _clamp(value, low: int, high: int) -> int:
    return max(low, min(high, int(value)))


# ------------------------------------------------------------------------------------ worlds
def state_grid(spec: dict, program: dict, pair: int, step: int) -> dict:
    """The world on input `pair` after `step` actions of `program`: the input grid with the
    marker count of each visited cell written in, in order, and the robot moved.
    Returns {"rows", "robot": [x, y, d], "markers_under_robot"}."""
    rows = [list(r) for r in spec["inputs"][pair]["rows"]]
    path = program["states"][pair]
    step = _clamp(step, 0, len(path) - 1)
    for x, y, _, markers in path[1 : step + 1]:
        rows[y][x] = "." if markers == 0 else (str(markers) if markers <= 9 else "+")
    x, y, d, markers = path[step]
    return {"rows": ["".join(r) for r in rows], "robot": [x, y, d], "markers_under_robot": markers}


def grid_text(grid: dict) -> str:
    """A grid as text, one line per row, the robot as ^ > v < (it hides its cell's markers)."""
    rows = [list(r) for r in grid["rows"]]
    x, y, d = grid["robot"]
    rows[y][x] = ROBOT_CHARS[d]
    return "\n".join("".join(r) for r in rows)


# ------------------------------------------------------------------------------------ probes
def _saved_rows(bundle: dict, checkpoint: int, family: str, spec: int, step: int) -> dict:
    """(offset, task index) -> (label, probe, prompt_only, conditional) of the saved rows at m_step."""
    return {(offset, task): (label, probe, prompt_only, conditional)
            for s, k, offset, task, label, probe, prompt_only, conditional in bundle["rows"][checkpoint].get(family, [])
            if s == spec and k == step}


def _not_scored(j: int, n: int, drop_last: bool) -> str:
    if j < 0:
        return "before the program"
    if j == 0:
        return "the input grid (s_0): never scored"
    if j > n:
        return "beyond the program's end"
    if j == n and drop_last:
        return "the final state (s_n): dropped (drop_last)"
    return "not in the scored test rows (row budget subsample)"


def probe_rows(bundle: dict, checkpoint: int, spec: int, family: str, step: int) -> list[dict]:
    """One entry per (offset, v1 task) at model state m_`step` (none at step 0): the saved true
    label, the probe's, the prompt-only control's and the state+facts probe's predictions (None
    where not saved), or the interpreter's label with a note why the row was not scored."""
    if step < 1:
        return []
    program = _stepped_program(bundle, checkpoint, spec, family)
    n = len(program["actions"])
    index = _saved_rows(bundle, checkpoint, family, spec, step)
    out = []
    for offset, name in bundle["offsets"]:
        j = step + offset
        for t, task in enumerate(bundle["tasks"]):
            pair = int(task.rsplit("_", 1)[1])
            saved = index.get((offset, t))
            true = saved[0] if saved else (program["states"][pair][j][2] if 0 <= j <= n else None)
            entry = {"offset": offset, "name": name, "task": task, "pair": pair, "target_step": j, "true": true,
                     "probe": None, "prompt_only": None, "conditional": None, "scored": saved is not None,
                     "note": "" if saved else _not_scored(j, n, bundle["drop_last"])}
            if saved:
                entry.update(probe=_label(saved[1]), prompt_only=_label(saved[2]), conditional=_label(saved[3]))
            out.append(entry)
    return out


def _label(value: int):
    return None if value is None or value < 0 else value


# ------------------------------------------------------------------------------------ curves
def curves(bundle: dict, family: str, offset: str) -> dict:
    """Per checkpoint: training step, generation accuracy, and the probe family's semantic
    content, strongest control (value and name), prompt-only control and conditional gain with
    its 95% interval (None where the run has no number)."""
    out = {"family": family, "offset": offset, "steps": [], "accuracy": [], "semantic_content": [],
           "strongest_control": [], "strongest_control_name": [], "prompt_only": [], "gain": [], "gain_low": [],
           "gain_high": []}
    for c in bundle["checkpoints"]:
        p = c["probes"][family][offset]
        out["steps"].append(c["step"])
        out["accuracy"].append(c["accuracy"])
        out["semantic_content"].append(p["semantic_content"])
        out["strongest_control"].append(p["strongest_control_value"])
        out["strongest_control_name"].append(p["strongest_control"])
        out["prompt_only"].append(p["prompt_only"])
        out["gain"].append(p["conditional_gain"]["value"])
        out["gain_low"].append(p["conditional_gain"]["low"])
        out["gain_high"].append(p["conditional_gain"]["high"])
    return out


# -------------------------------------------------------------------------------------- view
def _stepped_program(bundle: dict, checkpoint: int, spec: int, family: str) -> dict:
    entry = bundle["specs"][spec]
    index = entry["reference"] if family == "teacher_forced" else bundle["generated"][checkpoint][spec]
    return entry["programs"][index]


def _program_view(program: dict) -> dict:
    return {"lines": program["lines"], "actions": program["actions"], "parsed": program["parsed"],
            "correct": program["correct"], "action_lines": program["action_lines"]}


def view(bundle: dict, checkpoint: int = 0, spec: int = 0, family: str = "generated", step: int = 0,
         offset: str = "current") -> dict:
    """One screen of the viewer (JSON-ready). `checkpoint` and `spec` are indices into the
    bundle's lists (clamped), `step` the number of actions taken (clamped to 0..n)."""
    if family not in bundle["families"]:
        raise ValueError(f"family must be one of {bundle['families']}, got {family!r}")
    names = [name for _, name in bundle["offsets"]]
    if offset not in names:
        raise ValueError(f"offset must be one of {names}, got {offset!r}")
    checkpoint = _clamp(checkpoint, 0, len(bundle["checkpoints"]) - 1)
    spec = _clamp(spec, 0, len(bundle["specs"]) - 1)
    entry = bundle["specs"][spec]
    generated = entry["programs"][bundle["generated"][checkpoint][spec]]
    reference = entry["programs"][entry["reference"]]
    stepped = _stepped_program(bundle, checkpoint, spec, family)
    n = len(stepped["actions"])
    step = _clamp(step, 0, n)
    pairs = bundle["num_prompt_pairs"]
    grids = []
    for i in range(len(entry["inputs"])):
        state = state_grid(entry, stepped, i, step)
        grids.append({"pair": i, "in_prompt": i < pairs, "input": entry["inputs"][i], "output": entry["outputs"][i],
                      "state": state, "state_text": grid_text(state),
                      "generated_correct": generated["correct"][i], "reference_correct": reference["correct"][i]})
    point = bundle["checkpoints"][checkpoint]
    return {
        "checkpoint": {"index": checkpoint, "step": point["step"], "revision": point["revision"],
                       "accuracy": point["accuracy"], "accuracy_all_pairs": point["accuracy_all_pairs"]},
        "spec": {"index": spec, "id": entry["id"], "length": entry["length"]},
        "family": family,
        "offset": offset,
        "stepped": "reference" if family == "teacher_forced" else "generated",
        "programs": {"generated": _program_view(generated), "reference": _program_view(reference)},
        "step": step,
        "num_actions": n,
        "action": stepped["actions"][step - 1] if step else None,
        "grids": grids,
        "probes": probe_rows(bundle, checkpoint, spec, family, step),
        "curves": curves(bundle, family, offset),
    }


# -------------------------------------------------------------------------------------- HTML
def _e(text) -> str:
    return html.escape(str(text), quote=True)


def grid_svg(grid: dict, title: str = "", cell: int = CELL) -> str:
    """A grid as an inline SVG: walls dark, markers as numbered discs, the robot as an arrow
    pointing where it faces (with its cell's marker count, when known, as a small badge)."""
    rows = grid["rows"]
    height, width = len(rows), len(rows[0])
    parts = [f'<svg class="grid" xmlns="http://www.w3.org/2000/svg" width="{width * cell}" height="{height * cell}" '
             f'viewBox="0 0 {width * cell} {height * cell}" role="img" aria-label="{_e(title)}" '
             f'data-text="{_e(grid_text(grid))}">']
    for y, row in enumerate(rows):
        for x, char in enumerate(row):
            kind = "wall" if char == "#" else "cell"
            parts.append(f'<rect class="{kind}" x="{x * cell}" y="{y * cell}" width="{cell}" height="{cell}"/>')
            if char not in ".#":
                cx, cy = x * cell + cell / 2, y * cell + cell / 2
                parts.append(f'<circle class="marker" cx="{cx:g}" cy="{cy:g}" r="{cell * 0.32:g}"/>'
                             f'<text class="marker-count" x="{cx:g}" y="{cy + 4:g}">{_e(char)}</text>')
    x, y, d = grid["robot"]
    cx, cy, r = x * cell + cell / 2, y * cell + cell / 2, cell * 0.38
    points = f"{cx:g},{cy - r:g} {cx + r * 0.75:g},{cy + r * 0.8:g} {cx:g},{cy + r * 0.35:g} {cx - r * 0.75:g},{cy + r * 0.8:g}"
    parts.append(f'<polygon class="robot" points="{points}" transform="rotate({90 * d} {cx:g} {cy:g})"/>')
    markers = grid.get("markers_under_robot")
    if markers:
        parts.append(f'<text class="under-robot" x="{x * cell + cell - 3}" y="{y * cell + 9}">{markers}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _mark(ok) -> str:
    return '<span class="ok">✓</span>' if ok else '<span class="bad">✗</span>'


def grids_html(v: dict) -> str:
    """Every pair: input, the state after `step` actions, the expected output, correctness."""
    cards = []
    for g in v["grids"]:
        kind = "spec pair (in the prompt)" if g["in_prompt"] else "held-out pair"
        cards.append(
            f'<div class="pair {"prompt" if g["in_prompt"] else "heldout"}" data-pair="{g["pair"]}">'
            f'<div class="pair-title">pair {g["pair"]}: {kind} · generated {_mark(g["generated_correct"])} '
            f'reference {_mark(g["reference_correct"])}</div>'
            f'<div class="pair-grids"><figure>{grid_svg(g["input"], "input %d" % g["pair"])}<figcaption>input</figcaption>'
            f'</figure><figure class="state">{grid_svg(g["state"], "state %d" % g["pair"])}<figcaption>after '
            f'{v["step"]} action{"s" if v["step"] != 1 else ""}</figcaption></figure>'
            f'<figure>{grid_svg(g["output"], "output %d" % g["pair"])}<figcaption>output</figcaption></figure></div></div>')
    return f'<div class="pairs">{"".join(cards)}</div>'


def _program_html(title: str, program: dict, current_line: int | None) -> str:
    lines = []
    for i, line in enumerate(program["lines"] or ["(no program: it did not parse or was empty)"]):
        cls = ' class="current"' if i == current_line else ""
        lines.append(f"<span{cls}>{_e(line)}</span>")
    return (f'<div class="program"><div class="program-title">{_e(title)}</div>'
            f'<pre>{"".join(lines)}</pre></div>')


def programs_html(v: dict) -> str:
    """The generated program beside the reference; the stepped one's current action highlighted."""
    blocks = []
    for which in ("generated", "reference"):
        program = v["programs"][which]
        line = None
        if which == v["stepped"] and v["step"] and program["action_lines"]:
            line = program["action_lines"][v["step"] - 1]
        correct = sum(program["correct"])
        title = (f"{which} (step {v['checkpoint']['step']})" if which == "generated" else which)
        n = len(program["actions"])
        title += f" · {n} action{'s' if n != 1 else ''} · {correct}/{len(program['correct'])} pairs right"
        if which == v["stepped"]:
            title += " · stepped"
        blocks.append(_program_html(title, program, line))
    return f'<div class="programs">{"".join(blocks)}</div>'


def step_html(v: dict) -> str:
    what = f"after action {v['step']} of {v['num_actions']}: <b>{_e(v['action'])}</b>" if v["step"] else \
        f"the inputs (0 of {v['num_actions']} actions)"
    return f'<div class="step" data-step="{v["step"]}">{v["stepped"]} program, {what}</div>'


def _direction(value) -> str:
    return "–" if value is None else f"{ARROWS[value]} {('N', 'E', 'S', 'W')[value]}"


def probes_html(v: dict) -> str:
    """The probes at m_k: per offset and spec input, true direction, probe, prompt-only control,
    probe on state + prompt facts (✓/✗), or why the row was not scored."""
    if not v["probes"]:
        return ('<div class="probes"><p class="note">Step to an action (next ▶) to see what the probes read '
                'from the model state m_k where action k is emitted.</p></div>')
    head = ("<tr><th>offset</th><th>state</th><th>input</th><th>true</th><th>probe (state)</th>"
            "<th>prompt-only control</th><th>state + prompt facts</th></tr>")
    body = []
    for p in v["probes"]:
        cls = "scored" if p["scored"] else "unscored"

        def cell(value, true=p["true"], scored=p["scored"]):
            if not scored:
                return "<td>–</td>"
            return f'<td class="{"ok" if value == true else "bad"}">{_direction(value)}</td>'

        detail = (cell(p["probe"]) + cell(p["prompt_only"]) + cell(p["conditional"]) if p["scored"]
                  else f'<td colspan="3" class="note">{_e(p["note"])}</td>')
        body.append(f'<tr class="{cls}" data-offset="{p["offset"]}"><td>{_e(p["name"])} ({p["offset"]:+d})</td>'
                    f'<td>s<sub>{p["target_step"]}</sub></td><td>{p["pair"]}</td><td>{_direction(p["true"])}</td>'
                    f"{detail}</tr>")
    return f'<div class="probes"><table>{head}{"".join(body)}</table></div>'


def _scale(values, low, high, size, flip=True):
    def f(value):
        t = (value - low) / (high - low) if high > low else 0.5
        return size * (1 - t) if flip else size * t
    return f


def _polyline(xs, ys, fx, fy, cls) -> str:
    parts, segment = [], []
    for x, y in zip(xs, ys):
        if y is None:
            if segment:
                parts.append(segment)
            segment = []
            continue
        segment.append(f"{fx(x):.1f},{fy(y):.1f}")
    if segment:
        parts.append(segment)
    lines = "".join(f'<polyline class="{cls}" points="{" ".join(s)}"/>' for s in parts)
    dots = "".join(f'<circle class="{cls} dot" cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="2.5"/>'
                   for x, y in zip(xs, ys) if y is not None)
    return lines + dots


def curves_svg(v: dict, width: int = 520, height: int = 300) -> str:
    """Two charts over the checkpoints: accuracy (generation, semantic content, strongest control,
    in %) and the conditional gain with its 95% interval (points), the current checkpoint marked."""
    c = v["curves"]
    xs = c["steps"]
    left, right, top = 42, 10, 16
    plot_w = width - left - right
    h1, h2, gap = 150, 80, 34
    x_low, x_high = min(xs), max(xs)
    fx = _scale(xs, x_low, x_high, plot_w, flip=False)

    def X(x):
        return left + fx(x)

    fy1 = _scale(None, 0.0, 100.0, h1)
    gains = [g for g in c["gain_low"] + c["gain_high"] + c["gain"] if g is not None]
    g_low, g_high = min([0.0] + [100 * g for g in gains]), max([0.0] + [100 * g for g in gains])
    if g_high - g_low < 10:
        g_high, g_low = g_high + 5, g_low - 5
    fy2 = _scale(None, g_low, g_high, h2)
    top2 = top + h1 + gap

    def pct(values):
        return [None if val is None else 100 * val for val in values]

    parts = [f'<svg class="curves" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top2 + h2 + 28}" '
             f'viewBox="0 0 {width} {top2 + h2 + 28}" role="img" aria-label="summary curves">']
    for tick in (0, 25, 50, 75, 100):
        y = top + fy1(tick)
        parts.append(f'<line class="gridline" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{left - 4}" y="{y + 3:.1f}">{tick}</text>')
    parts.append(f'<text class="axis-title" x="{left}" y="{top - 5}">accuracy (%) · {_e(c["family"])} / '
                 f'{_e(c["offset"])}</text>')
    series = (("accuracy", "generation accuracy"), ("semantic_content", "semantic content"),
              ("strongest_control", "strongest control"))
    parts.append(f'<g transform="translate({left},{top})">')
    for key, _ in series:
        parts.append(_polyline(xs, pct(c[key]), fx, fy1, f"series {key}"))
    parts.append("</g>")
    for i, (key, label) in enumerate(series):
        parts.append(f'<text class="legend {key}" x="{left + 8 + i * 160}" y="{top + h1 + 14}">— {label}</text>')
    # conditional gain
    parts.append(f'<text class="axis-title" x="{left}" y="{top2 - 5}">conditional gain over the prompt facts '
                 f'(points, 95% interval)</text>')
    for tick in sorted({round(g_low), 0, round(g_high)}):
        y = top2 + fy2(tick)
        parts.append(f'<line class="gridline{" zero" if tick == 0 else ""}" x1="{left}" x2="{left + plot_w}" '
                     f'y1="{y:.1f}" y2="{y:.1f}"/><text class="tick" x="{left - 4}" y="{y + 3:.1f}">{tick:+d}</text>')
    parts.append(f'<g transform="translate({left},{top2})">')
    band_top = [(x, 100 * h) for x, h in zip(xs, c["gain_high"]) if h is not None]
    band_bottom = [(x, 100 * lo) for x, lo in zip(xs, c["gain_low"]) if lo is not None]
    if band_top and len(band_top) == len(band_bottom):
        points = [f"{fx(x):.1f},{fy2(y):.1f}" for x, y in band_top + band_bottom[::-1]]
        parts.append(f'<polygon class="band" points="{" ".join(points)}"/>')
    parts.append(_polyline(xs, pct(c["gain"]), fx, fy2, "series gain"))
    parts.append("</g>")
    current = v["checkpoint"]["step"]
    x = X(current)
    flip = x > left + plot_w - 70  # near the right edge: the label goes left of the line
    parts.append(f'<line class="current-step" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top2 + h2}"/>'
                 f'<text class="current-label{" end" if flip else ""}" x="{x - 3 if flip else x + 3:.1f}" '
                 f'y="{top + 10}">step {current}</text>')
    parts.append(f'<text class="tick" x="{left}" y="{top2 + h2 + 14}">{x_low}</text>'
                 f'<text class="tick end" x="{left + plot_w}" y="{top2 + h2 + 14}">{x_high}</text>'
                 f'<text class="axis-title" x="{left + plot_w / 2:.0f}" y="{top2 + h2 + 24}">training step</text>')
    parts.append("</svg>")
    return "".join(parts)


def summary_html(v: dict) -> str:
    """The curves plus this checkpoint's numbers for the chosen family and offset."""
    c, i = v["curves"], v["checkpoint"]["index"]

    def pct(value):
        return "–" if value is None else f"{100 * value:.1f}%"

    gain = c["gain"][i]
    interval = ("–" if gain is None else f"{100 * gain:+.1f} [{100 * c['gain_low'][i]:+.1f}, "
                f"{100 * c['gain_high'][i]:+.1f}] points")
    name = c["strongest_control_name"][i] or "–"
    facts = (f"<li>generation accuracy {pct(v['checkpoint']['accuracy'])} (all pairs "
             f"{pct(v['checkpoint']['accuracy_all_pairs'])})</li>"
             f"<li>semantic content {pct(c['semantic_content'][i])} · strongest control {_e(name)} "
             f"{pct(c['strongest_control'][i])} · prompt-only {pct(c['prompt_only'][i])}</li>"
             f"<li>conditional gain {interval}</li>")
    return f'<div class="summary">{curves_svg(v)}<ul class="facts">{facts}</ul></div>'


def checkpoint_html(bundle: dict, v: dict) -> str:
    point = v["checkpoint"]
    revision = point["revision"]
    where = ""
    if revision and bundle.get("model_repo"):
        where = (f' · model <code>{_e(bundle["model_repo"])}</code> revision <code>{_e(revision)}</code>')
    elif revision:
        where = f" · revision <code>{_e(revision)}</code>"
    return (f'<div class="checkpoint-info">checkpoint {point["index"] + 1} of {len(bundle["checkpoints"])}: '
            f'training step <b>{point["step"]}</b>{where} · spec id {v["spec"]["id"]}</div>')
