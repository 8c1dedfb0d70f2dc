"""Loading a backend by spec (assembly.providers.registry): a missing extra is named with its pip command, while
our own code failing to import is raised as it is."""

from __future__ import annotations

import pytest

from assembly.errors import MissingExtraError
from assembly.providers import registry


@pytest.fixture
def backends(tmp_path, monkeypatch):
    """Backends whose modules import a missing third-party package, a missing module of ours, a missing name of ours."""
    modules = {"needs_dep": "import no_such_dependency_xyz\n",
               "missing_module": "import assembly.no_such_module_xyz\n",
               "missing_name": "from assembly.providers import no_such_name_xyz\n"}
    for name, source in modules.items():
        (tmp_path / f"backend_{name}.py").write_text(source)
        monkeypatch.setitem(registry.BACKENDS, name.replace("_", ""), (f"backend_{name}:Model", "openai"))
    monkeypatch.syspath_prepend(str(tmp_path))


def test_a_missing_dependency_names_the_extra_to_install(backends):
    with pytest.raises(MissingExtraError, match=r"\(no_such_dependency_xyz\): pip install 'assembly-sim\[openai\]'"):
        registry.load_model("needsdep:x")


@pytest.mark.parametrize("provider", ["missingmodule", "missingname"])
def test_our_own_import_errors_are_not_reported_as_a_missing_extra(backends, provider):
    with pytest.raises(ImportError) as caught:
        registry.load_model(f"{provider}:x")
    assert caught.value.name.startswith("assembly.")
