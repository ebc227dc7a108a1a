/* The static page's viewer: the JavaScript twin of karel_hf/viewer/views.py.
 *
 * The same functions over the same bundle (the page inlines it as JSON in #viewer-data):
 * stateGrid, gridText, probeRows, curves and view compute what views.py's state_grid, grid_text,
 * probe_rows, curves and view compute (tests/test_viewer.py compares view() here with view()
 * there in a real browser); the *Html / *Svg functions draw it with viewer.css's classes.
 * No network, no library: the page works from file://.
 */
"use strict";

const ARROWS = ["↑", "→", "↓", "←"];
const LETTERS = ["N", "E", "S", "W"];
const ROBOT_CHARS = "^>v<";
const CELL = 26;

function clamp(value, low, high) { return Math.max(low, Math.min(high, Math.trunc(value))); }

function esc(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#x27;");
}

// ------------------------------------------------------------------------------- worlds
function stateGrid(spec, program, pair, step) {
  const rows = spec.inputs[pair].rows.map((r) => r.split(""));
  const path = program.states[pair];
  step = clamp(step, 0, path.length - 1);
  for (const [x, y, , markers] of path.slice(1, step + 1)) {
    rows[y][x] = markers === 0 ? "." : (markers <= 9 ? String(markers) : "+");
  }
  const [x, y, d, markers] = path[step];
  return { rows: rows.map((r) => r.join("")), robot: [x, y, d], markers_under_robot: markers };
}

function gridText(grid) {
  const rows = grid.rows.map((r) => r.split(""));
  const [x, y, d] = grid.robot;
  rows[y][x] = ROBOT_CHARS[d];
  return rows.map((r) => r.join("")).join("\n");
}

// ------------------------------------------------------------------------------- probes
function savedRows(bundle, checkpoint, family, spec, step) {
  const out = new Map();
  for (const [s, k, offset, task, label, probe, promptOnly, conditional] of (bundle.rows[checkpoint][family] || [])) {
    if (s === spec && k === step) out.set(offset + "/" + task, [label, probe, promptOnly, conditional]);
  }
  return out;
}

function notScored(j, n, dropLast) {
  if (j < 0) return "before the program";
  if (j === 0) return "the input grid (s_0): never scored";
  if (j > n) return "beyond the program's end";
  if (j === n && dropLast) return "the final state (s_n): dropped (drop_last)";
  return "not in the scored test rows (row budget subsample)";
}

function label(value) { return value === null || value === undefined || value < 0 ? null : value; }

function steppedProgram(bundle, checkpoint, spec, family) {
  const entry = bundle.specs[spec];
  const index = family === "teacher_forced" ? entry.reference : bundle.generated[checkpoint][spec];
  return entry.programs[index];
}

function probeRows(bundle, checkpoint, spec, family, step) {
  if (step < 1) return [];
  const program = steppedProgram(bundle, checkpoint, spec, family);
  const n = program.actions.length;
  const index = savedRows(bundle, checkpoint, family, spec, step);
  const out = [];
  for (const [offset, name] of bundle.offsets) {
    const j = step + offset;
    bundle.tasks.forEach((task, t) => {
      const pair = parseInt(task.slice(task.lastIndexOf("_") + 1), 10);
      const saved = index.get(offset + "/" + t);
      const trueLabel = saved ? saved[0] : (j >= 0 && j <= n ? program.states[pair][j][2] : null);
      const entry = { offset: offset, name: name, task: task, pair: pair, target_step: j, true: trueLabel,
                      probe: null, prompt_only: null, conditional: null, scored: saved !== undefined,
                      note: saved ? "" : notScored(j, n, bundle.drop_last) };
      if (saved) { entry.probe = label(saved[1]); entry.prompt_only = label(saved[2]); entry.conditional = label(saved[3]); }
      out.push(entry);
    });
  }
  return out;
}

// ------------------------------------------------------------------------------- curves
function curves(bundle, family, offset) {
  const out = { family: family, offset: offset, steps: [], accuracy: [], semantic_content: [], strongest_control: [],
                strongest_control_name: [], prompt_only: [], gain: [], gain_low: [], gain_high: [] };
  for (const c of bundle.checkpoints) {
    const p = c.probes[family][offset];
    out.steps.push(c.step);
    out.accuracy.push(c.accuracy);
    out.semantic_content.push(p.semantic_content);
    out.strongest_control.push(p.strongest_control_value);
    out.strongest_control_name.push(p.strongest_control);
    out.prompt_only.push(p.prompt_only);
    out.gain.push(p.conditional_gain.value);
    out.gain_low.push(p.conditional_gain.low);
    out.gain_high.push(p.conditional_gain.high);
  }
  return out;
}

// --------------------------------------------------------------------------------- view
function programView(program) {
  return { lines: program.lines, actions: program.actions, parsed: program.parsed, correct: program.correct,
           action_lines: program.action_lines };
}

function view(bundle, checkpoint, spec, family, step, offset) {
  checkpoint = clamp(checkpoint, 0, bundle.checkpoints.length - 1);
  spec = clamp(spec, 0, bundle.specs.length - 1);
  const entry = bundle.specs[spec];
  const generated = entry.programs[bundle.generated[checkpoint][spec]];
  const reference = entry.programs[entry.reference];
  const stepped = steppedProgram(bundle, checkpoint, spec, family);
  const n = stepped.actions.length;
  step = clamp(step, 0, n);
  const grids = entry.inputs.map((input, i) => {
    const state = stateGrid(entry, stepped, i, step);
    return { pair: i, in_prompt: i < bundle.num_prompt_pairs, input: input, output: entry.outputs[i], state: state,
             state_text: gridText(state), generated_correct: generated.correct[i], reference_correct: reference.correct[i] };
  });
  const point = bundle.checkpoints[checkpoint];
  return {
    checkpoint: { index: checkpoint, step: point.step, revision: point.revision, accuracy: point.accuracy,
                  accuracy_all_pairs: point.accuracy_all_pairs },
    spec: { index: spec, id: entry.id, length: entry.length },
    family: family,
    offset: offset,
    stepped: family === "teacher_forced" ? "reference" : "generated",
    programs: { generated: programView(generated), reference: programView(reference) },
    step: step,
    num_actions: n,
    action: step ? stepped.actions[step - 1] : null,
    grids: grids,
    probes: probeRows(bundle, checkpoint, spec, family, step),
    curves: curves(bundle, family, offset),
  };
}

// --------------------------------------------------------------------------------- HTML
function num(value) { return String(Math.round(value * 1000) / 1000); }

function gridSvg(grid, title) {
  const rows = grid.rows, height = rows.length, width = rows[0].length, c = CELL;
  const parts = [`<svg class="grid" xmlns="http://www.w3.org/2000/svg" width="${width * c}" height="${height * c}" ` +
                 `viewBox="0 0 ${width * c} ${height * c}" role="img" aria-label="${esc(title)}" data-text="${esc(gridText(grid))}">`];
  rows.forEach((row, y) => {
    row.split("").forEach((ch, x) => {
      parts.push(`<rect class="${ch === "#" ? "wall" : "cell"}" x="${x * c}" y="${y * c}" width="${c}" height="${c}"/>`);
      if (ch !== "." && ch !== "#") {
        const cx = x * c + c / 2, cy = y * c + c / 2;
        parts.push(`<circle class="marker" cx="${num(cx)}" cy="${num(cy)}" r="${num(c * 0.32)}"/>` +
                   `<text class="marker-count" x="${num(cx)}" y="${num(cy + 4)}">${esc(ch)}</text>`);
      }
    });
  });
  const [x, y, d] = grid.robot;
  const cx = x * c + c / 2, cy = y * c + c / 2, r = c * 0.38;
  const points = [[cx, cy - r], [cx + r * 0.75, cy + r * 0.8], [cx, cy + r * 0.35], [cx - r * 0.75, cy + r * 0.8]]
    .map(([a, b]) => `${num(a)},${num(b)}`).join(" ");
  parts.push(`<polygon class="robot" points="${points}" transform="rotate(${90 * d} ${num(cx)} ${num(cy)})"/>`);
  if (grid.markers_under_robot) {
    parts.push(`<text class="under-robot" x="${x * c + c - 3}" y="${y * c + 9}">${grid.markers_under_robot}</text>`);
  }
  parts.push("</svg>");
  return parts.join("");
}

function mark(ok) { return ok ? '<span class="ok">✓</span>' : '<span class="bad">✗</span>'; }

function gridsHtml(v) {
  const cards = v.grids.map((g) => {
    const kind = g.in_prompt ? "spec pair (in the prompt)" : "held-out pair";
    return `<div class="pair ${g.in_prompt ? "prompt" : "heldout"}" data-pair="${g.pair}">` +
      `<div class="pair-title">pair ${g.pair}: ${kind} · generated ${mark(g.generated_correct)} reference ${mark(g.reference_correct)}</div>` +
      `<div class="pair-grids"><figure>${gridSvg(g.input, "input " + g.pair)}<figcaption>input</figcaption></figure>` +
      `<figure class="state">${gridSvg(g.state, "state " + g.pair)}<figcaption>after ${v.step} action${v.step !== 1 ? "s" : ""}</figcaption></figure>` +
      `<figure>${gridSvg(g.output, "output " + g.pair)}<figcaption>output</figcaption></figure></div></div>`;
  });
  return `<div class="pairs">${cards.join("")}</div>`;
}

function programHtml(title, program, currentLine) {
  const lines = program.lines.length ? program.lines : ["(no program: it did not parse or was empty)"];
  const body = lines.map((line, i) => `<span${i === currentLine ? ' class="current"' : ""}>${esc(line)}</span>`);
  return `<div class="program"><div class="program-title">${esc(title)}</div><pre>${body.join("")}</pre></div>`;
}

function programsHtml(v) {
  return `<div class="programs">` + ["generated", "reference"].map((which) => {
    const program = v.programs[which];
    let line = null;
    if (which === v.stepped && v.step && program.action_lines.length) line = program.action_lines[v.step - 1];
    const correct = program.correct.filter(Boolean).length;
    let title = which === "generated" ? `generated (step ${v.checkpoint.step})` : which;
    const n = program.actions.length;
    title += ` · ${n} action${n !== 1 ? "s" : ""} · ${correct}/${program.correct.length} pairs right`;
    if (which === v.stepped) title += " · stepped";
    return programHtml(title, program, line);
  }).join("") + `</div>`;
}

function stepHtml(v) {
  const what = v.step ? `after action ${v.step} of ${v.num_actions}: <b>${esc(v.action)}</b>`
                      : `the inputs (0 of ${v.num_actions} actions)`;
  return `<div class="step" data-step="${v.step}">${v.stepped} program, ${what}</div>`;
}

function direction(value) { return value === null ? "–" : `${ARROWS[value]} ${LETTERS[value]}`; }

function probesHtml(v) {
  if (!v.probes.length) {
    return '<div class="probes"><p class="note">Step to an action (next ▶) to see what the probes read ' +
           'from the model state m_k where action k is emitted.</p></div>';
  }
  const head = "<tr><th>offset</th><th>state</th><th>input</th><th>true</th><th>probe (state)</th>" +
               "<th>prompt-only control</th><th>state + prompt facts</th></tr>";
  const body = v.probes.map((p) => {
    const cell = (value) => `<td class="${value === p.true ? "ok" : "bad"}">${direction(value)}</td>`;
    const detail = p.scored ? cell(p.probe) + cell(p.prompt_only) + cell(p.conditional)
                            : `<td colspan="3" class="note">${esc(p.note)}</td>`;
    const sign = p.offset >= 0 ? "+" + p.offset : String(p.offset);
    return `<tr class="${p.scored ? "scored" : "unscored"}" data-offset="${p.offset}"><td>${esc(p.name)} (${sign})</td>` +
           `<td>s<sub>${p.target_step}</sub></td><td>${p.pair}</td><td>${direction(p.true)}</td>${detail}</tr>`;
  });
  return `<div class="probes"><table>${head}${body.join("")}</table></div>`;
}

function scale(low, high, size, flip) {
  return (value) => {
    const t = high > low ? (value - low) / (high - low) : 0.5;
    return flip ? size * (1 - t) : size * t;
  };
}

function polyline(xs, ys, fx, fy, cls) {
  const parts = [];
  let segment = [];
  xs.forEach((x, i) => {
    if (ys[i] === null) { if (segment.length) parts.push(segment); segment = []; return; }
    segment.push(`${fx(x).toFixed(1)},${fy(ys[i]).toFixed(1)}`);
  });
  if (segment.length) parts.push(segment);
  const lines = parts.map((s) => `<polyline class="${cls}" points="${s.join(" ")}"/>`).join("");
  const dots = xs.map((x, i) => ys[i] === null ? "" :
    `<circle class="${cls} dot" cx="${fx(x).toFixed(1)}" cy="${fy(ys[i]).toFixed(1)}" r="2.5"/>`).join("");
  return lines + dots;
}

function curvesSvg(v) {
  const c = v.curves, xs = c.steps, width = 520, left = 42, right = 10, top = 16;
  const plotW = width - left - right, h1 = 150, h2 = 80, gap = 34;
  const xLow = Math.min(...xs), xHigh = Math.max(...xs);
  const fx = scale(xLow, xHigh, plotW, false);
  const fy1 = scale(0, 100, h1, true);
  const gains = c.gain_low.concat(c.gain_high, c.gain).filter((g) => g !== null).map((g) => 100 * g);
  let gLow = Math.min(0, ...gains), gHigh = Math.max(0, ...gains);
  if (gHigh - gLow < 10) { gHigh += 5; gLow -= 5; }
  const fy2 = scale(gLow, gHigh, h2, true);
  const top2 = top + h1 + gap, total = top2 + h2 + 28;
  const pct = (values) => values.map((value) => value === null ? null : 100 * value);
  const parts = [`<svg class="curves" xmlns="http://www.w3.org/2000/svg" width="${width}" height="${total}" ` +
                 `viewBox="0 0 ${width} ${total}" role="img" aria-label="summary curves">`];
  for (const tick of [0, 25, 50, 75, 100]) {
    const y = top + fy1(tick);
    parts.push(`<line class="gridline" x1="${left}" x2="${left + plotW}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}"/>` +
               `<text class="tick" x="${left - 4}" y="${(y + 3).toFixed(1)}">${tick}</text>`);
  }
  parts.push(`<text class="axis-title" x="${left}" y="${top - 5}">accuracy (%) · ${esc(c.family)} / ${esc(c.offset)}</text>`);
  const series = [["accuracy", "generation accuracy"], ["semantic_content", "semantic content"],
                  ["strongest_control", "strongest control"]];
  parts.push(`<g transform="translate(${left},${top})">`);
  for (const [key] of series) parts.push(polyline(xs, pct(c[key]), fx, fy1, `series ${key}`));
  parts.push("</g>");
  series.forEach(([key, name], i) => {
    parts.push(`<text class="legend ${key}" x="${left + 8 + i * 160}" y="${top + h1 + 14}">— ${name}</text>`);
  });
  parts.push(`<text class="axis-title" x="${left}" y="${top2 - 5}">conditional gain over the prompt facts (points, 95% interval)</text>`);
  for (const tick of Array.from(new Set([Math.round(gLow), 0, Math.round(gHigh)])).sort((a, b) => a - b)) {
    const y = top2 + fy2(tick);
    parts.push(`<line class="gridline${tick === 0 ? " zero" : ""}" x1="${left}" x2="${left + plotW}" y1="${y.toFixed(1)}" ` +
               `y2="${y.toFixed(1)}"/><text class="tick" x="${left - 4}" y="${(y + 3).toFixed(1)}">${tick >= 0 ? "+" : ""}${tick}</text>`);
  }
  parts.push(`<g transform="translate(${left},${top2})">`);
  const bandTop = xs.map((x, i) => [x, c.gain_high[i]]).filter(([, h]) => h !== null).map(([x, h]) => [x, 100 * h]);
  const bandBottom = xs.map((x, i) => [x, c.gain_low[i]]).filter(([, l]) => l !== null).map(([x, l]) => [x, 100 * l]);
  if (bandTop.length && bandTop.length === bandBottom.length) {
    const points = bandTop.concat(bandBottom.reverse()).map(([x, y]) => `${fx(x).toFixed(1)},${fy2(y).toFixed(1)}`);
    parts.push(`<polygon class="band" points="${points.join(" ")}"/>`);
  }
  parts.push(polyline(xs, pct(c.gain), fx, fy2, "series gain"));
  parts.push("</g>");
  const current = v.checkpoint.step, x = left + fx(current);
  const flip = x > left + plotW - 70;  // near the right edge: the label goes left of the line
  parts.push(`<line class="current-step" x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${top}" y2="${top2 + h2}"/>` +
             `<text class="current-label${flip ? " end" : ""}" x="${(flip ? x - 3 : x + 3).toFixed(1)}" y="${top + 10}">step ${current}</text>`);
  parts.push(`<text class="tick" x="${left}" y="${top2 + h2 + 14}">${xLow}</text>` +
             `<text class="tick end" x="${left + plotW}" y="${top2 + h2 + 14}">${xHigh}</text>` +
             `<text class="axis-title" x="${Math.round(left + plotW / 2)}" y="${top2 + h2 + 24}">training step</text>`);
  parts.push("</svg>");
  return parts.join("");
}

function summaryHtml(v) {
  const c = v.curves, i = v.checkpoint.index;
  const pct = (value) => value === null ? "–" : `${(100 * value).toFixed(1)}%`;
  const signed = (value) => `${value >= 0 ? "+" : ""}${(100 * value).toFixed(1)}`;
  const gain = c.gain[i];
  const interval = gain === null ? "–" : `${signed(gain)} [${signed(c.gain_low[i])}, ${signed(c.gain_high[i])}] points`;
  const facts = `<li>generation accuracy ${pct(v.checkpoint.accuracy)} (all pairs ${pct(v.checkpoint.accuracy_all_pairs)})</li>` +
    `<li>semantic content ${pct(c.semantic_content[i])} · strongest control ${esc(c.strongest_control_name[i] || "–")} ` +
    `${pct(c.strongest_control[i])} · prompt-only ${pct(c.prompt_only[i])}</li><li>conditional gain ${interval}</li>`;
  return `<div class="summary">${curvesSvg(v)}<ul class="facts">${facts}</ul></div>`;
}

function checkpointHtml(bundle, v) {
  const point = v.checkpoint;
  let where = "";
  if (point.revision && bundle.model_repo) {
    where = ` · model <code>${esc(bundle.model_repo)}</code> revision <code>${esc(point.revision)}</code>`;
  } else if (point.revision) {
    where = ` · revision <code>${esc(point.revision)}</code>`;
  }
  return `<div class="checkpoint-info">checkpoint ${point.index + 1} of ${bundle.checkpoints.length}: ` +
         `training step <b>${point.step}</b>${where} · spec id ${v.spec.id}</div>`;
}

// --------------------------------------------------------------------------------- page
function start() {
  const bundle = JSON.parse(document.getElementById("viewer-data").textContent);
  const $ = (id) => document.getElementById(id);
  const state = { checkpoint: bundle.checkpoints.length - 1, spec: 0, family: bundle.families[0], step: 0, offset: "current" };
  document.title = bundle.title;
  $("title").textContent = bundle.title;
  const slider = $("checkpoint");
  slider.max = String(bundle.checkpoints.length - 1);
  slider.value = String(state.checkpoint);
  const specs = $("spec");
  specs.innerHTML = bundle.specs.map((s, i) =>
    `<option value="${i}">spec ${s.id} · reference ${s.length} action${s.length !== 1 ? "s" : ""}</option>`).join("");
  const specSlider = $("spec-index");
  specSlider.max = String(bundle.specs.length - 1);
  $("family").innerHTML = bundle.families.map((f) => `<option value="${f}">${f}</option>`).join("");
  $("offset").innerHTML = bundle.offsets.map(([, name]) =>
    `<option value="${name}"${name === "current" ? " selected" : ""}>${name}</option>`).join("");

  function render() {
    const v = view(bundle, state.checkpoint, state.spec, state.family, state.step, state.offset);
    state.step = v.step;
    $("checkpoint-label").textContent = `step ${v.checkpoint.step}`;
    $("step").textContent = String(v.step);
    specs.value = String(state.spec);
    specSlider.value = String(state.spec);
    $("checkpoint-info").innerHTML = checkpointHtml(bundle, v);
    $("step-info").innerHTML = stepHtml(v);
    $("grids").innerHTML = gridsHtml(v);
    $("programs").innerHTML = programsHtml(v);
    $("probes").innerHTML = probesHtml(v);
    $("summary").innerHTML = summaryHtml(v);
  }

  slider.addEventListener("input", () => { state.checkpoint = Number(slider.value); render(); });
  specs.addEventListener("change", () => { state.spec = Number(specs.value); render(); });
  specSlider.addEventListener("input", () => { state.spec = Number(specSlider.value); render(); });
  $("family").addEventListener("change", (e) => { state.family = e.target.value; render(); });
  $("offset").addEventListener("change", (e) => { state.offset = e.target.value; render(); });
  $("previous-action").addEventListener("click", () => { state.step = Math.max(0, state.step - 1); render(); });
  $("next-action").addEventListener("click", () => { state.step += 1; render(); });
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "SELECT" || e.target.tagName === "INPUT") return;
    if (e.key === "ArrowRight") { state.step += 1; render(); }
    if (e.key === "ArrowLeft") { state.step = Math.max(0, state.step - 1); render(); }
  });
  // for tests and the console: the bundle, the current state and the view function
  window.karelViewer = { bundle: bundle, state: state, view: view, render: render };
  render();
}

document.addEventListener("DOMContentLoaded", start);
