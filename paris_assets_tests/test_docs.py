"""The README and the documentation site stay true: the site builds strictly (no broken link or anchor, no page
left out of the navigation), the README stays a front door, every path and module they name exists, the settings
page names every settings key, and the one WebDataset recipe they show never unpickles a member."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from paris_assets.settings import PROJECT_ROOT, Settings

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def texts() -> dict[str, str]:
    return {"README.md": README.read_text(), **{f"docs/{p.name}": p.read_text() for p in PAGES}}


def test_the_site_builds_strictly(tmp_path):
    """mkdocs --strict with mkdocs.yml's validation: a broken link or anchor, or a page not in nav, fails."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "site" / "index.html").exists()
    built = {p.stem for p in (tmp_path / "site").glob("*.html")}
    assert {p.stem for p in PAGES} <= built


def test_the_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move the detail into docs/ (at most 200)"
    head = "\n".join(lines[:40])
    assert "make demo" in head and "make test" in head, "README.md must show `make demo` and `make test` in its first 40 lines"
    assert not re.search(r"issue #?\d+|#\d{1,3}\b", "\n".join(lines), re.IGNORECASE), "no issue numbers in the README"


def test_the_readme_links_resolve():
    """mkdocs checks the pages' links; the README's relative links (into docs/, the screenshots) are checked here."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [t for t in targets if "://" not in t]
    assert local, "the README links into docs/"
    missing = [t for t in local if not (PROJECT_ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


PATH = re.compile(r"(?<![\w/.-])((?:paris_assets|paris_assets_tests|scripts|notebooks)/[\w./-]*\w)")
# short forms inside the package: lib/store/arrays.py, models/heads.py, lib/outputs/samples.decode_sample
SHORT = re.compile(r"(?<![\w/.<>-])((?:lib|models|assets|checks|engines|media|bench|io_managers|sensors)/[\w/]*\w)"
                   r"(\.py\b|\.\w+)?")
MODULE = re.compile(r"(?<![\w.])(paris_assets(?:\.\w+)+)")
LIB_DOTTED = re.compile(r"(?<![\w./])(lib(?:\.\w+)+)")  # lib.run.crops.decode_crops, written without the package


def missing_paths(text: str) -> set[str]:
    missing = {p for p in (m.group(1) for m in PATH.finditer(text)) if "*" not in p and not (PROJECT_ROOT / p).exists()}
    for m in SHORT.finditer(text):
        path = PROJECT_ROOT / "paris_assets" / m.group(1)
        if m.group(2) == ".py":
            ok = path.with_suffix(".py").exists()
        else:  # a module, a package, or a module and a name in it (lib/store/arrays.open_array)
            ok = path.with_suffix(".py").exists() or path.is_dir()
        if not ok:
            missing.add(m.group(0))
    return missing


@pytest.mark.parametrize("name", list(texts()))
def test_every_named_path_exists(name):
    """Every path a page names (paris_assets/..., lib/..., models/..., scripts/, notebooks/) is in the tree."""
    missing = sorted(missing_paths(texts()[name]))
    assert not missing, f"{name} names paths that do not exist: {missing}"
    assert not re.search(r"\bbench_\w+\.py", texts()[name]), f"{name} names a bench_X.py (now paris_assets/bench/X.py)"


@pytest.mark.parametrize("name", list(texts()))
def test_every_named_module_exists(name):
    """Every dotted paris_assets.x.y (python -m, imports) resolves to a module, a package, or a name in one."""
    missing = []
    named = {m.group(1) for m in MODULE.finditer(texts()[name])}
    named |= {"paris_assets." + m.group(1) for m in LIB_DOTTED.finditer(texts()[name])}
    for dotted in sorted(named):
        parts = dotted.split(".")
        # the longest prefix that is a module or package; what follows may be a name inside it (one level)
        for cut in range(len(parts), 0, -1):
            base = PROJECT_ROOT.joinpath(*parts[:cut])
            if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
                break
        else:
            cut = 0
        if cut == 0 or len(parts) - cut > 1:
            missing.append(dotted)
    assert not missing, f"{name} names modules that do not exist: {missing}"


def settings_keys(model: type[BaseModel] = Settings, prefix: str = ""):
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from settings_keys(kind, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_the_settings_page_names_every_key():
    """docs/settings.md has a table row for every key of paris_assets/settings.py, walked from the models."""
    page = (DOCS / "settings.md").read_text()
    first_cells = [line.split(" | ")[0] for line in page.splitlines() if line.startswith("| `")]
    missing = [key for key in settings_keys() if not any(f"`{key}`" in cell for cell in first_cells)]
    assert not missing, f"docs/settings.md lacks a row for {missing}"


@pytest.mark.parametrize("name", list(texts()))
def test_no_page_recommends_an_unsafe_webdataset_decode(name):
    """webdataset's default handlers unpickle .pyd/.pickle members: no bare .decode(), and every
    WebDataset(...).decode(...) shown drops those handlers (pre=[], post=[])."""
    text = texts()[name]
    assert not re.search(r"\.decode\(\s*\)", text), f"{name} shows a bare .decode()"
    for match in re.finditer(r"WebDataset\(", text):
        statement = text[match.start():text.find("\n\n", match.start()) % (len(text) + 1)]
        decode = statement.find(".decode(")
        if decode >= 0:
            assert "post=[]" in statement[decode:], f"{name}: a WebDataset .decode( keeps the pickle handlers"


def recipe(text: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    found = [b for b in blocks if "def paris_members" in b]
    assert len(found) == 1, "expected the WebDataset recipe exactly once"
    return found[0]


class _Tampered:
    """A pickle that would create a file when unpickled."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (open, (str(self.flag), "w"))


def test_the_one_recipe_reads_our_shards_and_unpickles_nothing(tmp_path):
    """The README's and docs/outputs.md's recipe are the same code; run on a shard with a planted .pyd member,
    it decodes ours (arrays, text, json) and leaves the pickle as bytes."""
    import io
    import json

    import numpy as np

    from paris_assets.lib.outputs.tars import TarShardWriter

    code = recipe(README.read_text())
    assert code == recipe((DOCS / "outputs.md").read_text()), "README and docs/outputs.md show different recipes"
    flag = tmp_path / "unpickled"
    latent = io.BytesIO()
    np.save(latent, np.arange(16, dtype=np.float16).reshape(1, 4, 4))
    shard = tmp_path / "shard-000000.tar"
    with open(shard, "wb") as fh, TarShardWriter(fh) as writer:
        writer.write("0123456789abcdef", {"latent.npy": latent.getvalue(), "txt": b"a red boat",
                                          "json": json.dumps({"cluster": 3}).encode(),
                                          "extra.pyd": pickle.dumps(_Tampered(flag))})
    code = re.sub(r'WebDataset\("[^"]*"', f'WebDataset("{shard}"', code)
    scope: dict = {}
    exec(compile(code, "recipe", "exec"), scope)  # noqa: S102 - the documented recipe itself is what is tested
    samples = list(scope["dataset"])
    assert len(samples) == 1
    sample = samples[0]
    assert sample["latent.npy"].dtype == np.float16 and sample["latent.npy"].shape == (1, 4, 4)
    assert sample["txt"] == "a red boat" and sample["json"] == {"cluster": 3}
    assert isinstance(sample["extra.pyd"], bytes) and not flag.exists()


def architecture_tree() -> set[str]:
    """The module paths the tree in docs/architecture.md draws (relative to the project root)."""
    page = (DOCS / "architecture.md").read_text()
    block = page[page.index("## The layout"):]
    block = block[block.index("```\n") + 4:]
    block = block[:block.index("```")]
    lines = block.splitlines()
    assert lines[0].strip() == "paris_assets/"
    stack, paths = ["paris_assets"], {"paris_assets"}
    for line in lines[1:]:
        match = re.match(r"^([│ ]*)[├└]── (\S+)", line)
        assert match, f"not a tree line in docs/architecture.md: {line!r}"
        depth = len(match.group(1)) // 4
        name = match.group(2)
        del stack[depth + 1:]
        path = "/".join(stack + [name.rstrip("/")])
        paths.add(path)
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
    return paths


def test_the_architecture_tree_matches_the_package():
    """Every module of the package is on the architecture page's tree (its __init__ through its folder), and
    every entry on the tree exists."""
    drawn = architecture_tree()
    modules = {str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "paris_assets").rglob("*.py")
               if "__pycache__" not in p.parts}
    folders = {str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "paris_assets").rglob("*")
               if p.is_dir() and "__pycache__" not in p.parts and any(p.glob("*.py"))} | {"paris_assets"}
    undrawn = sorted(m for m in modules if m not in drawn and not (m.endswith("/__init__.py") and
                                                                   m.rpartition("/")[0] in drawn))
    assert not undrawn, f"docs/architecture.md's tree lacks {undrawn}: add a line saying each one's job"
    gone = sorted(p for p in drawn if p not in modules | folders)
    assert not gone, f"docs/architecture.md's tree names what no longer exists: {gone}"


IMPORT = re.compile(r"^\s*from ((?:paris_assets|paris_assets_tests)[\w.]*) import ([\w, ]+)$", re.MULTILINE)


def defined_names(module: Path) -> set[str]:
    """Top-level names a module defines or imports (read, not imported: no torch for a docs test)."""
    import ast

    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


@pytest.mark.parametrize("name", list(texts()))
def test_every_import_shown_resolves(name):
    """`from paris_assets.x import a, b` in a snippet: the module exists and defines a and b."""
    wrong = []
    for module, imported in IMPORT.findall(texts()[name]):
        base = PROJECT_ROOT.joinpath(*module.split("."))
        path = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        if not path.exists():
            wrong.append(module)
            continue
        names = defined_names(path)
        wrong += [f"{module}.{n.strip()}" for n in imported.split(",") if n.strip() and n.strip() not in names]
    assert not wrong, f"{name} shows imports that do not resolve: {wrong}"


def test_every_screenshot_is_shown():
    """`make screenshots` writes docs/screenshots/; each one is shown on some page (or the README)."""
    shown = "\n".join(texts().values())
    unshown = sorted(p.name for p in (DOCS / "screenshots").iterdir() if f"screenshots/{p.name}" not in shown)
    assert not unshown, f"screenshots no page shows: {unshown}"
