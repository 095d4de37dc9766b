"""Nothing driftloop reads from a store can run code: no pickle, anywhere.

Weights load from safetensors only (a planted pickle is refused by the adapter and
base loaders: tests/tasks/test_finetune.py and tests/tasks/test_lm.py). This test
guards the rest of the code base: no call that unpickles may appear in it. It reads
the syntax tree, so a message that names such a call (as a fix) does not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("driftloop", "flows", "tasks", "evals", "bench")
# module.function calls that deserialise pickle.
CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("dill", "load"),
    ("dill", "loads"),
    ("cloudpickle", "load"),
    ("cloudpickle", "loads"),
    ("joblib", "load"),
    ("torch", "load"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
    ("shelve", "open"),
    ("pyfunc", "load_model"),
}
# Keyword arguments that switch a safe loader to pickle.
KEYWORDS = {"allow_pickle": True, "use_safetensors": False, "weights_only": False}


def unpickling_calls(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(
            func.value, ast.Name | ast.Attribute
        ):
            owner = (
                func.value.id if isinstance(func.value, ast.Name) else func.value.attr
            )
            if (owner, func.attr) in CALLS:
                found.append(f"{node.lineno}: {owner}.{func.attr}(...)")
        for keyword in node.keywords:
            value = keyword.value
            if (
                keyword.arg in KEYWORDS
                and isinstance(value, ast.Constant)
                and value.value is KEYWORDS[keyword.arg]
            ):
                found.append(f"{node.lineno}: {keyword.arg}={value.value}")
    return found


def test_no_source_file_unpickles():
    found = [
        f"{path.relative_to(ROOT)}:{call}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for call in unpickling_calls(path.read_text())
    ]
    assert found == []


def test_the_guard_sees_what_it_is_meant_to_see():
    source = "\n".join(
        [
            "state = torch.load(path)",
            "pickle.loads(blob)",
            "np.load(f, allow_pickle=True)",
            "AutoModel.from_pretrained(p, use_safetensors=False)",
            "mlflow.pyfunc.load_model(uri)",
            'raise Error("use from_pretrained(p, use_safetensors=False) yourself")',
        ]
    )
    assert len(unpickling_calls(source)) == 5
