"""Jobs, results and notices are JSON only: nothing in the package can unpickle."""

import ast
from pathlib import Path

import asyncjobs

UNSAFE = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}


def test_the_package_imports_no_unpickler():
    root = Path(asyncjobs.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(root)}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in UNSAFE
            ]
    assert not offenders
