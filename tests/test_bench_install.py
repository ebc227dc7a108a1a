"""benchmarks/bench_install.py: fresh venvs timed per pip option, on a one-module wheel installed offline."""

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from bench_scripts import load_script


def _bench():
    return load_script("bench_install")


def _wheel(folder: Path) -> Path:
    """tinypkg 0.1 as a pure-Python wheel (PEP 427): one module, its metadata and RECORD."""
    files = {"tinypkg/__init__.py": b"ANSWER = 42\n",
             "tinypkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
             "tinypkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for name, data in files.items()) + "tinypkg-0.1.dist-info/RECORD,,\n"
    path = folder / "tinypkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {**files, "tinypkg-0.1.dist-info/RECORD": record.encode()}.items():
            z.writestr(name, data)
    return path


def test_each_variant_gets_a_fresh_venv_and_no_compile_leaves_the_compiling_to_the_first_run(tmp_path, capsys):
    bench = _bench()
    wheel = _wheel(tmp_path)
    result = bench.main(["--target", str(wheel), "--pip_args=--no-index", "--variants", "default; --no-compile",
                         "--first_run", "python -c 'import tinypkg; assert tinypkg.ANSWER == 42'",
                         "--output", str(tmp_path / "b.json")])
    default, lazy = result["median"]["default"], result["median"]["--no-compile"]
    assert default["pyc_from_install"] >= 1 and lazy["pyc_from_install"] == 0  # pip compiled tinypkg, or did not
    assert default["pyc_from_first_run"] == 0 and lazy["pyc_from_first_run"] == 1  # ... so the import did
    assert all(row["install_s"] > 0 and row["first_run_s"] > 0 for rows in result["runs"].values() for row in rows)
    assert default["total_s"] == pytest.approx(default["venv_s"] + default["install_s"] + default["first_run_s"], abs=0.2)
    assert result["total_first_over"]["--no-compile"] == pytest.approx(default["total_s"] / lazy["total_s"], rel=0.02)
    assert json.loads((tmp_path / "b.json").read_text())["median"] == result["median"]
    assert "total, default / variant: --no-compile" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--variants", "default"], "--variants: two or more distinct"),
    (["--variants", "default;default"], "--variants: two or more distinct"),
    (["--rounds", "0"], "--rounds must be at least 1"),
    (["--target", "/nonexistent/pkg"], "--target /nonexistent/pkg: no such file or folder"),
])
def test_bad_arguments_give_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        _bench().main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and message in err[-1] and "Traceback" not in "\n".join(err)


def test_a_failing_install_names_the_variant_in_one_line(tmp_path, capsys):
    wheel = _wheel(tmp_path)
    with pytest.raises(SystemExit) as e:
        _bench().main(["--target", str(wheel), "--pip_args=--no-index", "--first_run", "none",
                       "--variants", "default;--no-such-pip-option"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith("bench_install.py: error: pip install (--no-such-pip-option) exited 2: ")
