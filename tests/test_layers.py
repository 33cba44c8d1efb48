"""The package's two layers, as docs/architecture.md draws them: the plugin (what an ESPnet user imports) never
imports the recipe toolkit (espnet_bertkd.recipe) or a recipe's own code, no plugin module imports one of a higher
layer, and `pip install espnet-bertkd` without extras pulls no recipe-only dependency."""
from __future__ import annotations

import ast
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "espnet_bertkd"
# Lower layers never import higher ones: shared utilities, then the KD core (teacher, soft labels, loss), the ASR
# model and decoding built on it, ESPnet registration and the preflight, and the entry points. The recipe toolkit
# sits above them all.
LAYERS = {"utils": 0, "compat": 0, "kd": 1, "asr": 2, "tasks": 3, "launch": 4, "bin": 4, "recipe": 5}
RECIPE_ONLY = ("jiwer", "espeakng-loader", "scipy", "sentencepiece")


def layer(module: str) -> int:
    """The layer of a module `espnet_bertkd.<part>...` (the package itself: the entry-point layer)."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else LAYERS["bin"]


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    return ".".join(parts)


def imports(path: Path) -> List[Tuple[int, str]]:
    """Every absolute `espnet_bertkd...` or `homophones...` module a file imports (also inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return [(line, m) for line, m in found if m.split(".")[0] in ("espnet_bertkd", "homophones")]


def plugin_files() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "recipe" not in p.relative_to(PACKAGE).parts}


def test_layer_table_covers_every_part_of_the_package():
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert parts - {"__init__"} == set(LAYERS)


def test_no_import_runs_up_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for line, target in imports(path):
            if target.split(".")[0] == "homophones":
                upward.append(f"{path}:{line}: {name} imports the embedded recipe's {target}")
            elif name != "espnet_bertkd" and layer(target) > layer(name):
                upward.append(f"{path}:{line}: {name} (layer {layer(name)}) imports {target} (layer {layer(target)})")
    assert upward == []


def test_importing_every_plugin_module_imports_no_recipe_code():
    """What ESPnet loads with the plugin (training, decoding, export, every plugin entry point) stays free of the
    recipe toolkit and of the recipe-only libraries."""
    modules = sorted(plugin_files())
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('espnet_bertkd.recipe', 'homophones',"
            " 'jiwer', 'espeakng_loader')))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def setup_kwargs() -> dict:
    """setup()'s arguments, read by running setup.py with setuptools.setup replaced."""
    captured = {}
    with mock.patch("setuptools.setup", side_effect=lambda **kw: captured.update(kw)), \
            mock.patch("sys.argv", ["setup.py", "--name"]):
        cwd = Path.cwd()
        try:
            import os

            os.chdir(REPO)
            runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
        finally:
            os.chdir(cwd)
    return captured


def requirement_name(req: str) -> str:
    return req.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()


def test_plugin_install_pulls_no_recipe_only_dependency():
    kwargs = setup_kwargs()
    plain = {requirement_name(r) for r in kwargs["install_requires"]}
    assert plain.isdisjoint(RECIPE_ONLY), plain & set(RECIPE_ONLY)
    recipe = {requirement_name(r) for r in kwargs["extras_require"]["recipe"]}
    assert set(RECIPE_ONLY) <= recipe


@pytest.mark.parametrize("package", ["espnet_bertkd.recipe"])
def test_packaged_with_the_plugin(package):
    assert package in setup_kwargs()["packages"]


def test_install_requires_pins_only_the_espnet_releases():
    """`pip install espnet-bertkd` on a cluster must not replace the site's CUDA torch: exact versions live in
    tools/constraints/ only (which tools/install.sh applies), never in install_requires."""
    kwargs = setup_kwargs()
    pinned = [r for r in kwargs["install_requires"] if "==" in r.split(";")[0]]
    assert {requirement_name(r) for r in pinned} == {"espnet"}, pinned
    torch_reqs = [r for r in kwargs["install_requires"] if requirement_name(r) in ("torch", "torchaudio")]
    assert len(torch_reqs) == 2 and all(">=" in r for r in torch_reqs)
    for release in ("202511", "202611"):  # the tested versions stay exact in the constraints
        text = (REPO / "tools/constraints" / f"espnet{release}.txt").read_text().splitlines()
        assert "torch==2.11.0" in text and "torchaudio==2.11.0" in text
