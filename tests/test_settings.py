"""Settings: one list of names, [tool.pie-audit], and flags > config > defaults."""

from dataclasses import fields

import pytest

from pie_audit.errors import ConfigError
from pie_audit.audit._gate import GateRules
from pie_audit.audit._pie import BAD_TIE_BREAK
from pie_audit.audit._settings import (
    BAD_SETTING,
    BAD_VALUE,
    NO_CONFIG,
    SETTINGS,
    UNKNOWN_KEY,
    UNKNOWN_SETTING,
    Settings,
    find_config,
    read_settings,
    resolve_settings,
)
from pie_audit.audit._stats import BAD_ALPHA


def test_read_settings(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text(
        "[project]\nname = 'x'\n\n[tool.pie-audit]\nmax-class-drop = 0.05\nmax_pie_fraction = 0.1\n"
        "max-harmed-classes = 2\nalpha = 0.1\ncorrection = 'none'\n\n[tool.pie-audit.train]\nepochs = 3\n"
    )
    settings = read_settings(path)
    assert settings == {
        "max_class_drop": 0.05,
        "max_pie_fraction": 0.1,
        "max_harmed_classes": 2,
        "alpha": 0.1,
        "correction": "none",
    }
    resolved = resolve_settings(config=path)
    assert resolved.rules == GateRules(max_class_drop=0.05, max_pie_fraction=0.1, max_harmed_classes=2)
    assert (resolved.alpha, resolved.correction, resolved.source) == (0.1, "none", path)


def test_read_settings_without_table(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text("[project]\nname = 'x'\n")
    assert read_settings(path) == {}


def test_read_settings_missing_file(tmp_path):
    assert read_settings(tmp_path / "pyproject.toml", required=False) == {}
    with pytest.raises(ConfigError) as e:
        read_settings(tmp_path / "pyproject.toml")
    assert str(e.value) == NO_CONFIG.format(path=tmp_path / "pyproject.toml")


def test_read_settings_rejects_unknown_key(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.pie-audit]\nmax-clas-drop = 0.05\n")
    with pytest.raises(ConfigError) as e:
        read_settings(path)
    assert str(e.value).startswith(UNKNOWN_KEY.format(path=path, key="max-clas-drop", known="")[:-1])


def test_read_settings_rejects_wrong_type(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.pie-audit]\nmax-harmed-classes = 'two'\n")
    with pytest.raises(ConfigError) as e:
        read_settings(path)
    assert str(e.value) == BAD_VALUE.format(path=path, key="max-harmed-classes", expected="an integer", value="two")


def test_read_settings_rejects_invalid_toml(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.pie-audit\n")
    with pytest.raises(ConfigError) as e:
        read_settings(path)
    assert str(e.value).startswith(f"{path}: not valid TOML (")




def test_every_setting_is_a_field_of_settings_or_rules():
    names = {f.name for f in fields(Settings)} | {f.name for f in fields(GateRules)}
    assert set(SETTINGS) <= names
    assert names - set(SETTINGS) == {"confidence", "rules", "source"}


def test_defaults():
    settings = resolve_settings()
    assert settings == Settings()
    assert settings.rules == GateRules() and settings.source is None
    assert settings.statistics() == {
        "alpha": 0.05, "correction": "fdr_bh", "tie_break": "lowest", "test": "auto", "detect": 0.02,
        "n_bootstrap": 1000, "confidence": 0.95, "seed": 0, "min_group_support": 30,
    }  # fmt: skip
    assert resolve_settings({"max_class_drop": None}).detect_drop == 0.02
    assert Settings(rules=GateRules(max_class_drop=0.05)).detect_drop == 0.05
    assert Settings(rules=GateRules(max_class_drop=None)).detect_drop == 0.02
    assert Settings(detect=0.1).detect_drop == 0.1


def test_options_win_over_the_file_which_wins_over_defaults(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.pie-audit]\nalpha = 0.01\nseed = 5\nmax-pie-fraction = 0.1\n")
    settings = resolve_settings({"seed": 9, "max_pie_fraction": None, "max_accuracy_drop": 0.2}, config=path)
    assert (settings.alpha, settings.seed, settings.n_bootstrap) == (0.01, 9, 1000)
    assert settings.rules == GateRules(max_pie_fraction=0.1, max_accuracy_drop=0.2)
    assert settings.source == path


def test_find_config_searches_upward_for_the_table(tmp_path, monkeypatch):
    deep = tmp_path / "project" / "sub" / "dir"
    deep.mkdir(parents=True)
    assert find_config(deep) is None
    (tmp_path / "pyproject.toml").write_text("[tool.pie-audit]\nalpha = 0.1\n")
    # A nearer pyproject.toml without the table is passed over, as pytest and ruff do.
    (tmp_path / "project" / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert find_config(deep) == tmp_path / "pyproject.toml"
    (tmp_path / "project" / "sub" / "pyproject.toml").write_text("[tool.pie-audit]\n")
    assert find_config(deep) == tmp_path / "project" / "sub" / "pyproject.toml"
    monkeypatch.chdir(deep)
    assert find_config() == tmp_path / "project" / "sub" / "pyproject.toml"


def test_boolean_and_new_settings_from_the_file(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text(
        "[tool.pie-audit]\nstable-pies-only = true\nmax-pie-fraction = 0.1\ntest = 'welch'\n"
        "detect = 0.05\nmin-power = 0.8\nmax-class-recall-drop = 0.03\n"
    )
    settings = resolve_settings(config=path)
    assert settings.rules == GateRules(
        max_pie_fraction=0.1, stable_pies_only=True, min_power=0.8, max_class_recall_drop=0.03
    )
    assert (settings.test, settings.detect) == ("welch", 0.05)
    path.write_text("[tool.pie-audit]\nstable-pies-only = 1\n")
    with pytest.raises(ConfigError) as e:
        resolve_settings(config=path)
    assert str(e.value) == BAD_VALUE.format(path=path, key="stable-pies-only", expected="true or false", value=1)


def test_bad_values_are_refused():
    with pytest.raises(ConfigError) as e:
        resolve_settings({"alpha": 1.5})
    assert str(e.value) == BAD_ALPHA.format(value=1.5)
    with pytest.raises(ConfigError) as e:
        resolve_settings({"tie_break": "random"})
    assert str(e.value) == BAD_TIE_BREAK.format(choices="lowest, highest", value="random")
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        resolve_settings({"seed": -7})
    with pytest.raises(ConfigError, match="n_bootstrap"):
        resolve_settings({"n_bootstrap": 0})
    with pytest.raises(ConfigError, match="max-class-drop"):
        resolve_settings({"max_class_drop": 2.0})
    with pytest.raises(ConfigError) as e:
        resolve_settings({"alpah": 0.1})
    assert str(e.value).startswith(UNKNOWN_SETTING.format(name="alpah", known="")[:-2])


def test_a_bad_value_in_the_file_names_the_file(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.pie-audit]\nalpha = 2\n")
    with pytest.raises(ConfigError) as e:
        resolve_settings(config=path)
    assert str(e.value) == BAD_SETTING.format(path=path, problem=BAD_ALPHA.format(value=2))
    # The same bad value given as an option is the option's fault, not the file's.
    path.write_text("[tool.pie-audit]\nalpha = 0.1\n")
    with pytest.raises(ConfigError) as e:
        resolve_settings({"alpha": 2}, config=path)
    assert str(e.value) == BAD_ALPHA.format(value=2)


def test_a_non_table_is_refused(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[tool]\npie-audit = "strict"\n')
    with pytest.raises(ConfigError, match="must be a table"):
        read_settings(path)
