"""The shape the code keeps (issue 19): Faust's private names only in streams/runtime/, tests
on public names only, small modules and functions, and a README map that matches the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STREAMS = REPO / "streams"


def _python(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_only_the_runtime_touches_fausts_private_names():
    private_import = re.compile(r"^\s*from faust[\w.]* import [^\n]*\b_[a-z]", re.M)
    # A private attribute of a Faust object: the app, its consumer, producer, streams, events...
    private_attribute = re.compile(r"\b(?:app|consumer|producer|stream|event|message|thread|transport|tables?"
                                   r"|topic|agent|worker|conf|fetcher|flow_control)\._[a-z]\w*")
    offenders = []
    for path in _python(STREAMS):
        if path.is_relative_to(STREAMS / "runtime"):
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(REPO)}: {m.group(0).strip()}" for m in private_import.finditer(text)]
        offenders += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in private_attribute.finditer(text)]
    assert offenders == []


def test_tests_import_public_names_only():
    offenders = []
    for path in _python(REPO / "tests"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "tests" or node.module.startswith("tests."):
                    offenders.append(f"{path.relative_to(REPO)}: from {node.module}")
                elif node.module.split(".")[0] in ("streams", "models"):
                    offenders += [f"{path.relative_to(REPO)}: {node.module}.{a.name}" for a in node.names
                                  if a.name.startswith("_")]
    assert offenders == []


def test_modules_and_functions_stay_small():
    too_big = []
    for path in _python(STREAMS):
        source = path.read_text()
        if source.count("\n") > 400:
            too_big.append(f"{path.relative_to(REPO)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_big.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert too_big == []


def test_the_readme_code_map_matches_the_tree():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Map of the code", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`((?:streams|models|triton_repo|deploy|tests)/[\w./-]*)`", section))
    assert named, "the README has no code map"
    missing = sorted(n for n in named if not (REPO / n).exists())
    assert missing == []
    packages = {p.parent.relative_to(REPO).as_posix() + "/" for p in STREAMS.rglob("__init__.py")
                if "__pycache__" not in p.parts and p.parent != STREAMS}
    modules = {p.relative_to(REPO).as_posix() for p in STREAMS.glob("*.py") if p.name != "__init__.py"}
    unmapped = sorted((packages | modules) - named)
    assert unmapped == [], "add them to the README's code map"
