"""LLaVA's own evaluation scripts (PyPI ``llava-torch==1.2.2.post1``, installed ``--no-deps`` by ``make install``)
as the oracle. Its package ``__init__`` imports the whole model stack, so the plain-Python files under
``llava/eval/`` are imported by path or run as scripts, never through ``import llava``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

INSTALL = "pip install --no-deps llava-torch==1.2.2.post1"


def llava_eval_folder() -> Path:
    spec = importlib.util.find_spec("llava")
    assert spec is not None and spec.submodule_search_locations, f"LLaVA's scorers are the tests' oracle: {INSTALL}"
    folder = Path(spec.submodule_search_locations[0]) / "eval"
    assert (folder / "eval_textvqa.py").exists(), f"{folder} is not llava-torch's eval folder: {INSTALL}"
    return folder


def llava_eval_module(name: str) -> types.ModuleType:
    """``llava/eval/<name>.py`` imported with stub ``llava`` / ``llava.eval`` packages (so its own
    ``from llava.eval.m4c_evaluator import …`` resolves without the model stack); ``sys.modules`` is restored."""
    folder = llava_eval_folder()
    names = ("llava", "llava.eval", "llava.eval.m4c_evaluator", f"llava.eval.{name}")
    saved = {key: sys.modules.get(key) for key in names}
    try:
        for package, path in (("llava", folder.parent), ("llava.eval", folder)):
            stub = types.ModuleType(package)
            stub.__path__ = [str(path)]
            sys.modules[package] = stub
        spec = importlib.util.spec_from_file_location(f"llava.eval.{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


def run_llava_script(name: str, *args: str) -> str:
    """Run ``llava/eval/<name>.py`` as LLaVA's shell scripts do (``python llava/eval/<name>.py …``); its stdout."""
    command = [sys.executable, str(llava_eval_folder() / f"{name}.py"), *map(str, args)]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout
