"""question.yaml validation: every bad input is one line naming the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from assembly.config import apply_overrides, load_spec
from assembly.errors import SpecError
from tests.conftest import MINIMAL


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "q.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def base() -> dict:
    return yaml.safe_load(MINIMAL)


def error_of(tmp_path: Path, data) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, data))
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "q.yaml") in message
    return message


def test_minimal_file_loads_with_defaults(question_file):
    spec = load_spec(question_file)
    assert spec.ballot.options == ["Ban cars", "Keep access", "Ban only in summer"]
    assert spec.jury.size == 6 and spec.models.for_role("juror") == "embedded"
    assert spec.procedure.recent_turns == 4


def test_unknown_key_suggests_the_right_one(tmp_path):
    data = base()
    data["jury"]["sizee"] = 4
    message = error_of(tmp_path, data)
    assert "jury.sizee" in message and "did you mean 'size'" in message


def test_unknown_top_level_key_lists_expected(tmp_path):
    data = base()
    data["zzz"] = 1
    message = error_of(tmp_path, data)
    assert "zzz" in message and "question" in message


def test_malformed_yaml_names_the_line(tmp_path):
    message = error_of(tmp_path, "question: [unclosed\nballot: {")
    assert "malformed YAML" in message and "line" in message


def test_empty_option_list(tmp_path):
    data = base()
    data["ballot"]["options"] = []
    assert "ballot" in error_of(tmp_path, data) and "at least two options" in error_of(tmp_path, data)


def test_repeated_options(tmp_path):
    data = base()
    data["ballot"]["options"] = ["A", "A"]
    assert "repeat" in error_of(tmp_path, data)


def test_unknown_model_spec(tmp_path):
    data = base()
    data["models"] = {"juror": "gpt4:whatever"}
    message = error_of(tmp_path, data)
    assert "models" in message and "gpt4" in message


def test_missing_witness_document(tmp_path):
    data = base()
    data["witnesses"][0]["documents"] = ["nope.txt"]
    message = error_of(tmp_path, data)
    assert "witnesses.0.documents.0" in message and "nope.txt" in message


def test_rule_not_for_ballot_type(tmp_path):
    data = base()
    data["ballot"]["rules"] = ["schulze"]
    assert "does not apply to single ballots" in error_of(tmp_path, data)


def test_unknown_rule_suggestion(tmp_path):
    data = base()
    data["ballot"]["type"] = "ranked"
    data["ballot"]["rules"] = ["shulze"]
    assert "did you mean 'schulze'" in error_of(tmp_path, data)


def test_wrong_type_names_value(tmp_path):
    data = base()
    data["jury"]["size"] = "twelve"
    message = error_of(tmp_path, data)
    assert "jury.size" in message and "twelve" in message


def test_yes_no_defaults_options(tmp_path):
    data = base()
    data["ballot"] = {"type": "yes_no"}
    spec = load_spec(write(tmp_path, data))
    assert spec.ballot.options == ["Yes", "No"] and spec.ballot.rules == ["majority"]


def test_not_a_mapping(tmp_path):
    assert "expected a mapping" in error_of(tmp_path, "- just\n- a list\n")


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "absent.yaml")


def test_overrides_are_validated(question_file):
    spec = load_spec(question_file)
    changed = apply_overrides(spec, model="scripted:x", seed=9, jurors=8, rounds=1)
    assert changed.models.for_role("moderator") == "scripted:x"
    assert (changed.jury.seed, changed.jury.size, changed.procedure.rounds) == (9, 8, 1)
    with pytest.raises(SpecError, match="unknown model spec"):
        apply_overrides(spec, model="nonsense:thing")


def test_model_override_keeps_the_files_per_role_models(tmp_path):
    data = base()
    data["models"] = {"default": "embedded", "juror": "scripted:tuned-juror"}
    changed = apply_overrides(load_spec(write(tmp_path, data)), model="scripted:x")
    assert changed.models.default == "scripted:x"
    assert changed.models.for_role("juror") == "scripted:tuned-juror"  # named in the file: kept
    assert changed.models.for_role("moderator") == changed.models.for_role("witness") == "scripted:x"


def test_unknown_nested_key_lists_the_expected_keys(tmp_path):
    data = base()
    data["models"] = {"zzz": "embedded"}
    message = error_of(tmp_path, data)
    assert message.endswith("models.zzz: unknown key; expected one of default, juror, witness, moderator")


def test_yaml_booleans_and_numbers_as_options(tmp_path):
    text = MINIMAL.replace("options: [Ban cars, Keep access, Ban only in summer]", "options: [Yes, No, 3]")
    spec = load_spec(write(tmp_path, text))
    assert spec.ballot.options == ["Yes", "No", "3"]
