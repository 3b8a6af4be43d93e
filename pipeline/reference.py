"""Reference tables generated from the code: every run option (from :class:`RunOptions`) and every typed
error and warning (from :mod:`srcube.pipeline.errors`), as Markdown.

``python -m srcube.pipeline.reference REFERENCE.md`` rewrites the blocks between ``<!-- options-table -->``
/ ``<!-- /options-table -->`` and ``<!-- errors-table -->`` / ``<!-- /errors-table -->`` in that file;
``tests/test_docs.py`` fails when the file differs from what this module generates.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

from srcube.pipeline import errors
from srcube.pipeline.options import RunOptions, choices, expectation


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _type(name: str) -> str:
    options = choices(name)
    if options:
        return " \\| ".join(f"`{o}`" for o in options)
    ann = str(RunOptions.model_fields[name].annotation)
    ann = re.sub(r"typing\.|<class '([^']+)'>", lambda m: m.group(1) or "", ann)
    return f"`{ann}`".replace("|", "\\|")


def options_table() -> str:
    """One row per run option: name, accepted values, default, meaning (the field's help)."""
    rows = ["| option | values | default | meaning |", "|---|---|---|---|"]
    for name, f in RunOptions.model_fields.items():
        meaning = f.description or ""
        expect = expectation(name)
        if expect:
            meaning += f" ({expect})"
        rows.append(f"| `{name}` | {_type(name)} | `{f.default!r}` | {_cell(meaning)} |")
    return "\n".join(rows)


def _first_line(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n")[0]


def errors_table() -> str:
    """One row per typed error (catch them all as ``srcube.SrcubeError``) and warning: the built-in
    exception it also is, and when it is raised."""
    rows = ["| error or warning | also a | when |", "|---|---|---|"]
    for name, cls in vars(errors).items():
        if not isinstance(cls, type) or not issubclass(cls, (errors.SrcubeError, errors.SrcubeWarning)):
            continue
        if cls in (errors.SrcubeError, errors.SrcubeWarning):
            continue
        also = [b.__name__ for b in cls.__mro__[1:]
                if b.__module__ == "builtins" and b not in (Exception, BaseException, Warning, object)]
        parent = [b.__name__ for b in cls.__bases__ if b.__module__ == errors.__name__
                  and b not in (errors.SrcubeError, errors.SrcubeWarning)]
        also_text = ", ".join(f"`{a}`" for a in parent + also[:1])
        rows.append(f"| `{name}` | {also_text} | {_cell(_first_line(cls))} |")
    return "\n".join(rows)


BLOCKS = {"options-table": options_table, "errors-table": errors_table}


def rewrite(text: str) -> str:
    """``text`` with each generated block replaced by what the code gives now."""
    for tag, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {tag} -->\n).*?(<!-- /{tag} -->)", re.S)
        match = pattern.search(text)
        if not match:
            raise ValueError(f"no <!-- {tag} --> ... <!-- /{tag} --> block in the file")
        text = text[: match.start()] + match.group(1) + make() + "\n" + match.group(2) + text[match.end():]
    return text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m srcube.pipeline.reference FILE.md", file=sys.stderr)
        return 2
    path = Path(args[0])
    path.write_text(rewrite(path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
