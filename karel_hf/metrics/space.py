"""What makes a metric folder a self-contained `evaluate` Space, checked before it is loaded or pushed.

A Space that `evaluate.load("<namespace>/<name>")` reads holds `<name>.py` (the module script),
README.md (the card, YAML front matter with `sdk`), app.py and requirements.txt. On a machine that
has only what requirements.txt installs, the script runs when:

- every file it needs is in the folder: evaluate's loader copies each module the script imports
  relatively at the top level (`from .scoring import f`, one line, no comment after it: evaluate
  reads such a comment as a URL) into its module cache, but not the modules those import in turn,
  so the script imports every local module any of them imports;
- every other import is the standard library, `evaluate` (with `datasets`, which it depends on) or
  a package that requirements.txt names;
- requirements.txt names packages only (no URL, no path, not karel_hf, which is no package on the
  index).

karel_hf's own metric folders hold links to the pure modules they need (the Karel core, the probe
core), so the package and the Space run the same files; `karel-hf push metric` uploads the
linked files' contents. The card may say `${repo_id}`, filled in at push time (`render_card`).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from string import Template

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

REQUIRED_FILES = ("README.md", "app.py", "requirements.txt")
# evaluate's own dependencies, importable wherever evaluate is installed
EVALUATE_PROVIDES = ("evaluate", "datasets", "numpy")
# distribution name -> import name, where they differ
IMPORT_NAMES = {"scikit-learn": "sklearn", "pyyaml": "yaml", "pillow": "PIL", "beautifulsoup4": "bs4"}


def requirement_names(text: str, where: str = "requirements.txt") -> list[str]:
    """The canonical package names of a requirements.txt; a URL, a path, an option or karel_hf raises."""
    names = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            raise ValueError(f"{where} line {number} ({line!r}) is not a package requirement: a Space installs "
                             "from the package index, so list names with versions only (e.g. numpy>=1.26)") from None
        if requirement.url:
            raise ValueError(f"{where} line {number} installs {requirement.name} from {requirement.url}: list packages "
                             "from the package index only")
        if canonicalize_name(requirement.name) == "karel-hf":
            raise ValueError(f"{where} line {number} names karel_hf, which is not on the package index: the Space "
                             "ships the karel_hf modules it needs beside its script instead")
        names.append(canonicalize_name(requirement.name))
    return names


def _import_name(distribution: str) -> str:
    return IMPORT_NAMES.get(distribution, distribution.replace("-", "_"))


def _imports(path: Path) -> tuple[list[ast.ImportFrom], list[str]]:
    """(relative import nodes, top-level names of absolute imports) anywhere in the file."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as err:
        raise ValueError(f"{path} does not parse: {err}") from None
    relative, absolute = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                relative.append(node)
            else:
                absolute.append(node.module.split(".")[0])
    return relative, absolute


def _local_module(node: ast.ImportFrom, path: Path) -> str:
    """The sibling a relative import names; evaluate copies only `from .<name> import ...`."""
    if node.level != 1 or not node.module or "." in node.module:
        written = "." * node.level + (node.module or "")
        raise ValueError(f"{path.name} line {node.lineno}: `from {written} import ...` is not a sibling module; "
                         "a Space is one flat folder, so import local modules as `from .<name> import ...`")
    return node.module


def _front_matter(text: str) -> dict | None:
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.S)
    loaded = yaml.safe_load(match.group(1)) if match else None
    return loaded if isinstance(loaded, dict) else None


def check_space(folder, script_name: str | None = None) -> list[Path]:
    """Check that `folder` runs as a Space with only its requirements installed (see the module
    docstring); return the files a Space holds (sorted; caches and hidden files left out).

    `script_name` is the module script's stem (default: the folder's name). Raises ValueError naming
    the first problem and how to fix it.
    """
    folder = Path(folder)
    name = script_name or folder.name
    script = folder / f"{name}.py"
    if not script.is_file():
        raise ValueError(f"{folder} has no {name}.py: evaluate.load('<namespace>/{name}') runs the script named "
                         "after the Space")
    missing = [n for n in REQUIRED_FILES if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"{folder} lacks {', '.join(missing)}: an evaluate Space needs the module script, "
                         "README.md (card with YAML), app.py and requirements.txt")
    meta = _front_matter((folder / "README.md").read_text(encoding="utf-8"))
    if not meta or "sdk" not in meta:
        raise ValueError(f"{folder / 'README.md'}: the YAML front matter needs `sdk: gradio` and `app_file: app.py` "
                         "(a Space card)")
    provided = set(EVALUATE_PROVIDES) | {_import_name(n) for n in requirement_names(
        (folder / "requirements.txt").read_text(encoding="utf-8"), where=str(folder / "requirements.txt"))}

    tree = ast.parse(script.read_bytes(), filename=str(script))
    copied = set()  # what evaluate copies: the script's top-level relative imports
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            copied.add(_local_module(node, script))
    relative, _ = _imports(script)
    for node in relative:
        if _local_module(node, script) not in copied:
            raise ValueError(f"{script.name} line {node.lineno} imports .{node.module} inside a block: evaluate copies "
                             "only the files a script imports at its top level; move the import there")
    for module in sorted(copied):
        if not (folder / f"{module}.py").is_file():
            raise ValueError(f"{script.name} imports .{module}, but {folder} has no {module}.py")

    for path in [script, folder / "app.py", *(folder / f"{m}.py" for m in sorted(copied))]:
        relative, absolute = _imports(path)
        for node in relative:
            module = _local_module(node, path)
            if module not in copied:
                raise ValueError(f"{path.name} imports .{module}, which {script.name} does not import: evaluate copies "
                                 f"only the files the script imports, so add `from .{module} import ...` to it")
        for top in absolute:
            if top not in sys.stdlib_module_names and top not in provided:
                raise ValueError(f"{path.name} imports {top}, which a Space has only if requirements.txt installs it; "
                                 f"add its package to requirements.txt, or ship the module beside {script.name}")
    return _space_files(folder)


def _space_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if path.is_file() and not any(p.startswith(".") or p == "__pycache__" for p in parts) and path.suffix != ".pyc":
            files.append(path)
    return files


def render_card(text: str, repo_id: str) -> str:
    """The Space card with `${repo_id}` filled in; any other `${...}` left raises ValueError."""
    rendered = Template(text).safe_substitute(repo_id=repo_id)
    left = re.search(r"\$\{\w+\}", rendered)
    if left:
        raise ValueError(f"the metric card has the placeholder {left.group(0)}, which only ${{repo_id}} may be")
    return rendered
