"""The layers hold: lint-imports passes, docs/architecture.md states the contracts' DAG, the engine never imports
finetune (whose commands arrive through the `assembly.commands` entry point), and the plugin loader swallows only a
plugin whose own module is gone."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"assembly", "juries", "transcripts", "finetune"}


def importlinter() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]


def contracts(kind: str) -> list[dict]:
    return [c for c in importlinter()["contracts"] if c["type"] == kind]


def layers_of(line: str) -> list[set[str]]:
    """'a > b > c | d' -> [{a}, {b}, {c, d}]."""
    return [{p.strip() for p in re.split(r"[|:]", layer)} for layer in line.split(">")]


def doc_layers() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    found = re.findall(r"^Layers: `([^`]+)`\s*$", text, flags=re.MULTILINE)
    assert len(found) == 1, "docs/architecture.md must state the layers once, as: Layers: `a > b > c | d`"
    return found[0]


def test_lint_imports_passes():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.fail(f"{lint} not found: install the dev extra (pip install -e '.[dev]'), which has import-linter")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", proc.stdout)
    assert kept and int(kept[1]) == len(importlinter()["contracts"]) and kept[2] == "0", proc.stdout


def test_doc_layer_line_matches_the_contracts():
    line = doc_layers()
    (layered,) = contracts("layers")
    assert [{p.strip() for p in layer.split("|")} for layer in layered["layers"]] == layers_of(line)
    assert " > ".join(layered["layers"]) == line and line in layered["name"]
    # Siblings are independent ("|", not ":"), and the layers name every package the linter looks at.
    assert all(":" not in layer for layer in layered["layers"])
    assert set().union(*layers_of(line)) == set(importlinter()["root_packages"]) == PACKAGES
    # The forbidden contracts say the same: each leaf imports no other package, the engine never imports finetune.
    forbidden = {(src, mod) for c in contracts("forbidden") for src in c["source_modules"]
                 for mod in c["forbidden_modules"]}
    layers = layers_of(line)
    for leaf in layers[-1]:
        assert {(leaf, other) for other in PACKAGES - {leaf}} <= forbidden, f"{leaf} has no leaf contract"
    assert ("assembly", "finetune") in forbidden
    # No contract forbids what the line allows: a package may import any package in a layer to its right.
    rank = {package: i for i, layer in enumerate(layers) for package in layer}
    assert [(src, mod) for src, mod in forbidden if rank[mod] > rank[src]] == []


def test_doc_layer_parser_sees_a_drifted_line():
    (layered,) = contracts("layers")
    assert layers_of("assembly > finetune > juries | transcripts") != \
        [{p.strip() for p in layer.split("|")} for layer in layered["layers"]]


def test_engine_source_never_names_finetune():
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in (ROOT / "assembly").rglob("*.py")
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"^\s*(import finetune|from finetune)\b", line)]
    assert offenders == []


def test_torch_free_modules_stay_torch_free():
    code = ("import sys; import assembly.cli.app, assembly.providers.chat, assembly.seeds, assembly.text, "
            "finetune.cli, finetune.dataset, finetune.encoding; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_finetune_commands_come_from_the_entry_point():
    from assembly.cli.app import COMMANDS_GROUP, app

    (ep,) = [e for e in entry_points(group=COMMANDS_GROUP) if e.name == "finetune"]
    assert ep.value == "finetune.cli:register"
    result = CliRunner().invoke(app, ["finetune", "--help"])
    assert result.exit_code == 0 and "prepare" in result.output and "train" in result.output
    result = CliRunner().invoke(app, ["transcripts", "--help"])  # the importers are store commands, always there
    assert "import-polis" in result.output and "import-survey" in result.output


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "plug_ok.py").write_text(textwrap.dedent("""\
        def register(app):
            @app.command("hello")
            def hello():
                print("hello from a plugin")
        """))
    (tmp_path / "plug_broken.py").write_text("import no_such_dependency_xyz\n\ndef register(app):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def plugin(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group="assembly.commands")


def test_register_plugins_adds_commands_once(plugin_dir):
    from assembly.cli.app import register_plugins

    target = typer.Typer()
    target.command("noop")(lambda: None)
    names = register_plugins(target, [plugin("ok", "plug_ok:register"), plugin("ok", "plug_ok:register")])
    assert names == ["ok"]
    result = CliRunner().invoke(target, ["hello"])
    assert result.exit_code == 0 and "hello from a plugin" in result.output


def test_register_plugins_skips_only_a_missing_plugin_module(plugin_dir):
    from assembly.cli.app import register_plugins

    target = typer.Typer()
    # Stale metadata: the plugin's own package is gone -> skipped.
    assert register_plugins(target, [plugin("gone", "no_such_plugin_pkg.cli:register")]) == []
    # The plugin is there but a module it imports is missing -> raised, never swallowed.
    with pytest.raises(ModuleNotFoundError) as caught:
        register_plugins(target, [plugin("broken", "plug_broken:register")])
    assert caught.value.name == "no_such_dependency_xyz"
