"""Hand-built checks of the measuring pieces (run: pytest benchmarks/emergence/test_measure.py)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import measure as M  # noqa: E402

from karel_hf.karel import World, execute  # noqa: E402
from karel_hf.karel.program import Program  # noqa: E402
from karel_hf.karel.semantics import SEMANTICS as REPO_SEMANTICS, Semantics  # noqa: E402


def _specs(programs, init=None, out=None):
    actions = [np.array([M.ACTIONS.index(a) for a in p]) for p in programs]
    init = np.zeros(len(programs), dtype=int) if init is None else np.asarray(init)
    out = np.array([M.directions(a, i)[-1] for a, i in zip(actions, init)]) if out is None else np.asarray(out)
    return M.Specs([""] * len(programs), actions, init, out)


def test_directions_match_the_interpreter_under_every_map():
    rng = np.random.default_rng(0)
    grid = np.zeros((4, 4), dtype=np.int8)
    for name, mapping in M.SEMANTICS.items():
        sem = Semantics(name, {M.ACTIONS[i]: M.ACTIONS[j] for i, j in enumerate(mapping)}) if len(set(mapping)) == 5 else None
        for _ in range(20):
            acts = rng.integers(0, 5, size=rng.integers(1, 8))
            d0 = int(rng.integers(0, 4))
            grid[:] = 0
            grid[1, 2] = 2 + d0
            world = World.from_view_codes(grid)
            mapped = [M.ACTIONS[mapping[a]] for a in acts]
            result = execute(Program.from_actions(mapped), world, trace=True)
            assert M.directions(acts, d0, name).tolist() == [d0] + [s.direction for s in result.states]
            if sem is not None:  # a permutation: the same as the AST remapping
                names = [M.ACTIONS[a] for a in acts]
                assert Program.from_actions(mapped) == sem.apply(Program.from_actions(names))
    # the repo's swap is the authors' idx 0; its cycles agree with ours
    for name in ("cycle1", "cycle2"):
        assert dict(REPO_SEMANTICS[name].mapping) == {M.ACTIONS[i]: M.ACTIONS[j] for i, j in enumerate(M.SEMANTICS[name])}
    assert dict(REPO_SEMANTICS["swap"].mapping) == {M.ACTIONS[i]: M.ACTIONS[j] for i, j in enumerate(M.SEMANTICS["idx0"])}


def test_rows_drop_initial_and_final_states():
    specs = _specs([["turn_left", "move", "turn_right", "turn_right"], ["move"]], init=[1, 2])
    rows = {o: M.build_rows(specs, o) for o in M.OFFSETS}
    # program 0 (n = 4): label states j = k + o must lie in 1..3; program 1 (n = 1) gives no row
    assert rows[-1].k.tolist() == [2, 3, 4] and rows[-1].j.tolist() == [1, 2, 3]
    assert rows[0].k.tolist() == [1, 2, 3]
    assert rows[1].k.tolist() == [1, 2] and rows[2].k.tolist() == [1]
    assert rows[-2].k.tolist() == [3, 4]
    # directions after turn_left (E -> N), move, turn_right (N -> E), turn_right (E -> S)
    assert rows[-1].labels["original"].tolist() == [0, 0, 1]
    assert rows[-1].labels["idx0"].tolist() == [2, 2, 1]
    assert (rows[0].out == 2).all() and (rows[0].spec == 0).all()
    assert M.relative_labels(rows[-1]).tolist() == [3, 3, 0]


def test_fact_features():
    specs = _specs([["turn_left", "move", "turn_right"]], init=[3])
    rows = M.build_rows(specs, 0)
    sep, joint = M.fact_features(rows, 4), M.fact_features(rows, 4, joint=True)
    assert sep.shape == (2, 16) and (sep.sum(1) == 4).all()
    assert sep[0, 3] == 1 and sep[0, 4 + 3] == 1 and sep[0, 8] == 1 and sep[1, 9] == 1 and sep[0, 12 + 2] == 1
    assert joint.shape == (2, 256) and (joint.sum(1) == 1).all()
    assert len({tuple(np.flatnonzero(r)) for r in joint}) == 2


def _synthetic(label_from, n_specs=600, seed=0, length=5):
    rng = np.random.default_rng(seed)
    progs = [[M.ACTIONS[a] for a in rng.integers(0, 5, size=length)] for _ in range(n_specs)]
    specs = _specs(progs, init=rng.integers(0, 4, size=n_specs))
    rows = M.build_rows(specs, -1)
    states = []
    for i, acts in enumerate(specs.actions):
        traj = M.directions(acts, specs.init_dir[i])
        h = rng.normal(size=(length, 1, 16))
        if label_from == "state":  # the state after the prefix read so far, one-hot in 4 dims
            for k in range(1, length + 1):
                h[k - 1, 0, :4] += 3 * np.eye(4)[traj[k - 1]]
        states.append(h)
    code = rng.normal(size=(n_specs, 1, 16))
    return specs, code, states


def test_gain_is_zero_when_the_state_is_noise_and_large_when_it_holds_the_label():
    for label_from, low, high in (("noise", -0.05, 0.05), ("state", 0.3, 1.0)):
        tr = _synthetic(label_from, seed=1)
        te = _synthetic(label_from, seed=2)
        res = M.probe_offset(tr, te, -1, 5, semantics=("original",) + M.AUTHORS_MAPS)["linear/mean"]
        assert low <= res["conditional_gain"] <= high, (label_from, res["conditional_gain"])
        lo, hi = res["conditional_gain_ci"]
        assert lo <= res["conditional_gain"] <= hi
        if label_from == "state":
            assert lo > 0 and res["original_minus_best_alternative"] > 0.2
            assert res["semantic_content"] > 0.9 and res["shuffled"] < 0.4


def test_gain_is_zero_when_the_prompt_gives_every_label_away():
    # one-action programs after a fixed prefix: label state j = n-1 ... use programs whose turns are
    # all at the end, so every kept state equals the initial direction (printed in the prompt)
    rng = np.random.default_rng(3)
    n = 500
    progs = [["move", "move", "put_marker", "turn_left"] for _ in range(n)]
    specs = _specs(progs, init=rng.integers(0, 4, size=n))
    states = [np.stack([np.eye(4)[(d + k) % 4].repeat(4)[None] for k in range(4)]) for d in specs.init_dir]
    code = np.zeros((n, 1, 16))
    res = M.probe_offset((specs, code, states), (specs, code, states), 0, 4)
    r = res["linear/mean"]
    assert res["controls"]["initial_glyph"] == 1.0 and r["prompt_only"] == 1.0
    assert abs(r["conditional_gain"]) < 1e-9


def test_bootstrap_interval_covers_the_difference():
    rng = np.random.default_rng(0)
    spec = np.repeat(np.arange(300), 3)
    a = (rng.random(900) < 0.7).astype(float)
    b = (rng.random(900) < 0.5).astype(float)
    lo, hi = M.bootstrap_interval(a, b, spec)
    assert lo < a.mean() - b.mean() < hi and 0.05 < lo and hi < 0.35


def test_teacher_forced_positions_emit_each_action():
    from karel_hf.data.formatting import format_prompt
    from karel_hf.tokenizer import build_tokenizer

    tok = build_tokenizer()
    grid = np.zeros((1, 4, 4), dtype=np.int8)
    grid[0, 0, 0] = 2
    prompt = format_prompt(grid, grid)
    ids, emit = M.teacher_forced_ids(tok, prompt, [0, 1, 4])
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[emit[0]] == "{\n" and pieces[emit[0] - 3] == "Code:\n"
    assert [pieces[e + 1] for e in emit] == ["  move()\n", "  turn_left()\n", "  pick_marker()\n"]
    assert "".join(pieces[1:]) == prompt + "def run() {\n  move()\n  turn_left()\n  pick_marker()\n"
