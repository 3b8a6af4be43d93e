"""The docs stay true: a short README, the reference documents it links to, links that resolve, a folder map
that names every module, and only real ``srcube`` commands in the README's examples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

README_MAX_BYTES = 12288  # a newcomer reads it in five minutes; reference material lives in the documents below
DOCS = ["README.md", "ARCHITECTURE.md", "REFERENCE.md", "flows/README.md", "k8s/README.md", "training/README.md"]
PACKAGES = ["pipeline", "models", "training", "flows", "cli"]  # installed as srcube.<name>

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
# `srcube <command>` where a shell would run it: at the start of a line (after an optional prompt) or after
# `&&`, `||`, `|`, `;`, `(`, `$(`; `srcube.run_region` and `import srcube` are Python, not commands
COMMAND = re.compile(r"(?:^[ \t]*(?:\$[ \t]+)?|(?:&&|\|\||[|;(])[ \t]*)srcube[ \t]+([A-Za-z][\w-]*)", re.M)


def _text(rel: str) -> str:
    return (REPO / rel).read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section of a Markdown text (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(heading)}[ \t]*\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def _modules() -> list[str]:
    """Every module file of the packages, repository-relative (``pipeline/search/catalog.py``)."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name in ("__init__.py", "__main__.py") or "__pycache__" in path.parts:
                continue
            found.append(path.relative_to(REPO).as_posix())
    return found


def test_readme_is_short():
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, (f"README.md is {size} bytes, over {README_MAX_BYTES}: move reference material "
                                      "into ARCHITECTURE.md, flows/README.md, k8s/README.md or training/README.md")


@pytest.mark.parametrize("rel", DOCS)
def test_docs_exist(rel):
    assert (REPO / rel).is_file(), f"{rel} is missing"
    assert _text(rel).startswith("# "), f"{rel} has no title"


def _anchors(path: Path) -> set[str]:
    """The heading anchors GitHub gives a Markdown file (``## Cube writes: the model`` -> ``cube-writes-the-model``)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6}[ \t]+(.+)$", text, re.M)}


@pytest.mark.parametrize("rel", DOCS)
def test_docs_relative_links_resolve(rel):
    text = FENCE.sub("", _text(rel))  # links inside code blocks are not links
    base = (REPO / rel).parent
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # URLs (http:, mailto:, data:)
        path, _, anchor = target.partition("#")
        dest = base / path if path else REPO / rel
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert not broken, f"{rel} has links to files or headings that do not exist: {broken}"


def test_readme_and_architecture_link_each_other_and_the_reference_docs():
    readme = _text("README.md")
    for rel in ["ARCHITECTURE.md", "REFERENCE.md", "flows/README.md", "k8s/README.md", "training/README.md"]:
        assert f"]({rel}" in readme, f"README.md does not link {rel}"
    cards = sorted(p.name for p in (REPO / "models/weights").glob("*.md"))
    missing = [c for c in cards if f"](models/weights/{c})" not in readme]
    assert not missing, f"README.md does not link the model cards {missing}"


def test_docs_folder_map_names_every_module():
    folder_map = _section(_text("ARCHITECTURE.md"), "Folder map")
    missing = [m for m in _modules() if f"`{m}`" not in folder_map]
    assert not missing, ("ARCHITECTURE.md's folder map does not name these modules (add one line each, saying its "
                         f"concern): {missing}")


def test_docs_folder_map_names_only_existing_modules():
    folder_map = _section(_text("ARCHITECTURE.md"), "Folder map")
    named = re.findall(r"`((?:srcube|" + "|".join(PACKAGES) + r")/[\w/]+\.py)`", folder_map)
    assert named, "the folder map names no module"
    gone = [m for m in named if not (REPO / m).is_file()]
    assert not gone, f"ARCHITECTURE.md's folder map names modules that do not exist: {gone}"


def _commands(rel: str) -> list[str]:
    """The ``srcube <command>`` names in the code blocks of a document (shell comments left out)."""
    blocks = [re.sub(r"(?:^|[ \t])#.*$", "", block, flags=re.M) for block in FENCE.findall(_text(rel))]
    return [name for block in blocks for name in COMMAND.findall(block)]


def _real_commands() -> set[str]:
    import typer

    from srcube.cli import app

    return set(typer.main.get_command(app).commands)


def test_readme_commands_are_real():
    used = _commands("README.md")
    assert "run" in used, "the README has no `srcube run` example"
    real = _real_commands()
    unknown = sorted(set(used) - real)
    assert not unknown, f"README.md shows srcube commands that do not exist: {unknown} (real: {sorted(real)})"


@pytest.mark.parametrize("rel", [d for d in DOCS if d != "README.md"])
def test_docs_commands_are_real(rel):
    unknown = sorted(set(_commands(rel)) - _real_commands())
    assert not unknown, f"{rel} shows srcube commands that do not exist: {unknown}"


def test_readme_python_example_uses_the_public_namespace():
    import srcube

    match = re.search(r"```python\n(.*?)```", _text("README.md"), re.S)
    assert match, "the README has no Python example"
    code = match.group(1)
    assert "import srcube" in code
    names = set(re.findall(r"\bsrcube\.(\w+)", code))
    assert "run_region" in names
    assert names <= set(srcube.__all__), f"not in srcube's public API: {sorted(names - set(srcube.__all__))}"


def test_reference_tables_are_generated_from_the_code():
    """REFERENCE.md's option and error tables are what the code gives now (regenerate, do not edit)."""
    from srcube.pipeline import errors
    from srcube.pipeline.options import RunOptions
    from srcube.pipeline.reference import rewrite

    text = _text("REFERENCE.md")
    assert rewrite(text) == text, "REFERENCE.md is stale: run python -m srcube.pipeline.reference REFERENCE.md"
    for name in RunOptions.model_fields:
        assert f"| `{name}` |" in text, name
    for name, cls in vars(errors).items():
        if isinstance(cls, type) and issubclass(cls, errors.SrcubeError) and cls is not errors.SrcubeError:
            assert f"| `{name}` |" in text, name


def test_error_names_in_the_docs_exist():
    """Every ``SomethingError``/``SomethingWarning`` the documents name in code spans is one srcube has (or
    a Python built-in): the pipeline's, or training's (its configuration and data-parallel errors)."""
    import builtins

    import srcube
    from srcube.pipeline import errors
    from srcube.training import distributed

    known = {n for module in (errors, distributed) for n in vars(module) if n.endswith(("Error", "Warning"))}
    known |= set(dir(srcube)) | set(dir(builtins))
    for rel in DOCS:
        named = set(re.findall(r"`(?:srcube\.)?([A-Z]\w*(?:Error|Warning))`", _text(rel)))
        unknown = sorted(named - known)
        assert not unknown, f"{rel} names errors that srcube does not have: {unknown}"
