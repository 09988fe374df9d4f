"""Configuration: defaults, YAML file, environment, overrides and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctloop.config.settings import (
    CONFIG_FILENAME,
    Config,
    DatasetConfig,
    ModelFamily,
    Severity,
    Task,
    dump_config,
    env_overrides,
    load_config,
)
from ctloop.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """load_config() looks for ./ctloop.yaml: run every test in an empty folder."""
    monkeypatch.chdir(tmp_path)


def test_defaults_load_without_a_file():
    cfg = load_config(environ={})
    assert cfg == Config()
    assert cfg.dataset.target is None
    assert cfg.validation.severity_of("label_shift") == Severity.WARN
    assert cfg.validation.severity_of("type_error") == Severity.BLOCK
    # a check without a default severity blocks
    assert cfg.validation.severity_of("some_future_check") == Severity.BLOCK


def test_ctloop_yaml_in_the_working_folder_is_picked_up(tmp_path):
    write(tmp_path / CONFIG_FILENAME, "project: found\n")
    assert load_config(environ={}).project == "found"


def test_yaml_file_overrides_only_what_it_sets(tmp_path):
    path = write(
        tmp_path / "c.yaml",
        "project: loans\n"
        "dataset:\n  target: default\n  task: multiclass\n"
        "training:\n  window_days: 7\n  family: random_forest\n"
        "validation:\n  severity:\n    label_shift: block\n",
    )
    cfg = load_config(path, environ={})
    assert cfg.project == "loans"
    assert cfg.dataset.target == "default"
    assert cfg.dataset.task == Task.MULTICLASS
    assert cfg.training.window_days == 7
    assert cfg.training.family == ModelFamily.RANDOM_FOREST
    assert cfg.validation.severity_of("label_shift") == Severity.BLOCK
    # untouched sections keep their defaults
    assert cfg.training.holdout_fraction == Config().training.holdout_fraction
    # the metric settings follow the task when unset
    assert cfg.gates == Config(dataset={"task": "multiclass"}).gates
    assert cfg.gates.primary_metric == "roc_auc_ovr"
    assert cfg.registry_name == "loans"


def test_empty_yaml_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path / "c.yaml", ""), environ={}) == Config()


def test_precedence_file_then_environment_then_overrides(tmp_path):
    path = write(tmp_path / "c.yaml", "dataset:\n  target: from_file\n  id: file_id\n")
    env = {"CTLOOP_TARGET": "from_env", "CTLOOP_TIMESTAMP": "ts"}
    cfg = load_config(path, environ=env)
    assert cfg.dataset.target == "from_env"
    assert cfg.dataset.timestamp == "ts"
    assert cfg.dataset.id == "file_id"
    cfg = load_config(path, overrides={"dataset.target": "from_flag"}, environ=env)
    assert cfg.dataset.target == "from_flag"
    # None values (flags not given) are ignored
    cfg = load_config(path, overrides={"dataset.target": None}, environ=env)
    assert cfg.dataset.target == "from_env"


def test_dotted_overrides_create_sections():
    cfg = load_config(
        overrides={"training.window_days": 3, "gates.min_improvement": 0.01, "project": "p"},
        environ={},
    )
    assert cfg.training.window_days == 3
    assert cfg.gates.min_improvement == 0.01
    assert cfg.project == "p"


def test_override_into_a_scalar_is_a_config_error(tmp_path):
    path = write(tmp_path / "c.yaml", "project: loans\n")
    with pytest.raises(ConfigError, match="project is not a section"):
        load_config(path, overrides={"project.name": "x"}, environ={})


@pytest.mark.parametrize(
    ("env", "dotted", "expected"),
    [
        ({"CTLOOP_HOME": "/srv/ct"}, "paths.home", Path("/srv/ct")),
        ({"CTLOOP_TRACKING_URI": "http://mlflow:5000"}, "paths.tracking_uri", "http://mlflow:5000"),
        ({"CTLOOP_REGISTRY_NAME": "reg"}, "paths.registry_name", "reg"),
        ({"CTLOOP_PROFILE": "cluster"}, "profile", "cluster"),
        ({"CTLOOP_TASK": "regression"}, "dataset.task", Task.REGRESSION),
        ({"CTLOOP_ID": "key"}, "dataset.id", "key"),
        ({"CTLOOP_EXCLUDE": "a, b ,,c"}, "dataset.exclude", ["a", "b", "c"]),
    ],
)
def test_environment_variables_reach_their_field(env, dotted, expected):
    cfg = load_config(environ=env)
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    assert node == expected


def test_env_overrides_ignore_empty_and_foreign_variables():
    out = env_overrides(
        {"CTLOOP_TARGET": "", "CTLOOP_UNKNOWN": "x", "TARGET": "y", "CTLOOP_ID": "i"}
    )
    assert out == {"dataset.id": "i"}


def test_bad_environment_value_names_the_field():
    with pytest.raises(ConfigError) as info:
        load_config(environ={"CTLOOP_TASK": "ranking"})
    assert "dataset.task" in str(info.value)
    assert str(info.value).startswith("defaults:")


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("training:\n  holdout_fraction: 2\n", "training.holdout_fraction"),
        ("gates:\n  min_improvment: 0.01\n", "gates.min_improvment"),
        ("dataset:\n  task: ranking\n", "dataset.task"),
        ("validation:\n  severity:\n    duplicates: fatal\n", "validation.severity.duplicates"),
        ("validation:\n  max_missing_share: 1.5\n", "validation.max_missing_share"),
        ("triggers:\n  bootstrap_rows: 0\n", "triggers.bootstrap_rows"),
        ("drift:\n  share: 0\n", "drift.share"),
        ("colour: blue\n", "colour"),
    ],
)
def test_bad_value_is_one_line_naming_file_and_field(tmp_path, yaml_text, field):
    path = write(tmp_path / "ctloop-bad.yaml", yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {field}: ")
    # the context of pydantic's error is dropped: a user-facing error, not a traceback chain
    assert info.value.__cause__ is None


def test_several_bad_values_are_counted(tmp_path):
    path = write(tmp_path / "c.yaml", "training:\n  holdout_fraction: 2\n  window_days: -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "(and 1 more)" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


@pytest.mark.parametrize(
    ("text", "line"),
    [("project: x\ndataset: [a, b\ntraining: {}\n", 3), ("dataset:\n  target: y\n bad: 1\n", 3)],
)
def test_invalid_yaml_names_file_and_line(tmp_path, text, line):
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert message.startswith(str(path))
    assert "not valid YAML" in message
    assert f"line {line}" in message
    assert "\n" not in message


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path / "c.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of settings, got list"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a,b", ["a", "b"]), (" a , b ,", ["a", "b"]), ("", []), (["x", "y"], ["x", "y"])],
)
def test_exclude_accepts_comma_separated_text(value, expected):
    assert DatasetConfig(exclude=value).exclude == expected


def test_exclude_from_yaml_and_non_features(tmp_path):
    path = write(
        tmp_path / "c.yaml",
        "dataset:\n  target: y\n  id: key\n  timestamp: ts\n  exclude: a,b\n",
    )
    cfg = load_config(path, environ={})
    assert cfg.dataset.exclude == ["a", "b"]
    assert cfg.dataset.non_features() == {"y", "key", "ts", "a", "b"}
    assert DatasetConfig().non_features() == set()


def test_validate_assignment_rejects_bad_values():
    cfg = Config()
    with pytest.raises(ValueError):
        cfg.training.holdout_fraction = 0.95


def test_require_target():
    with pytest.raises(ConfigError, match="dataset.target"):
        Config().require_target()
    assert load_config(overrides={"dataset.target": "y"}, environ={}).require_target() == "y"


def test_registry_name_prefers_paths_setting():
    cfg = load_config(overrides={"project": "p", "paths.registry_name": "r"}, environ={})
    assert cfg.registry_name == "r"


def test_dump_then_load_round_trip(tmp_path):
    cfg = load_config(
        overrides={
            "dataset.target": "y",
            "dataset.exclude": "a,b",
            "training.family": "logistic_regression",
            "validation.severity": {"duplicates": "off"},
        },
        environ={},
    )
    path = tmp_path / "dumped.yaml"
    dump_config(cfg, path)
    assert load_config(path, environ={}) == cfg


def test_unknown_validation_check_name_is_rejected(tmp_path):
    path = tmp_path / "ctloop.yaml"
    path.write_text("validation:\n  severity:\n    label_shfit: 'off'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "validation.severity" in str(info.value)
    assert "label_shfit" in str(info.value)


def test_unknown_drift_method_is_rejected(tmp_path):
    path = tmp_path / "ctloop.yaml"
    path.write_text("drift:\n  num_method: wassersteinn\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "drift.num_method" in str(info.value)


def test_any_setting_by_its_path_from_the_environment():
    cfg = load_config(
        environ={
            "CTLOOP_TRIGGERS__COOLDOWN_MINUTES": "30",
            "ctloop_training__window_days": "3",  # names are case-insensitive
            "CTLOOP_DATASET__EXCLUDE": "a,b",
        }
    )
    assert cfg.triggers.cooldown_minutes == 30
    assert cfg.training.window_days == 3
    assert cfg.dataset.exclude == ["a", "b"]


def test_environment_precedence_file_then_short_name_then_flag(tmp_path):
    path = write(tmp_path / "ctloop.yaml", "dataset:\n  target: from_file\n  id: file_id\n")
    env = {"CTLOOP_DATASET__TARGET": "long", "CTLOOP_TARGET": "short", "CTLOOP_DATASET__ID": "e"}
    cfg = load_config(path, environ=env)
    assert (cfg.dataset.target, cfg.dataset.id) == ("short", "e")
    cfg = load_config(path, overrides={"dataset.target": "flag"}, environ=env)
    assert cfg.dataset.target == "flag"


def test_a_misspelt_setting_in_the_environment_names_the_field():
    with pytest.raises(ConfigError, match="training.windowdays"):
        load_config(environ={"CTLOOP_TRAINING__WINDOWDAYS": "3"})


# -- dataset settings kept in the home


def test_kept_dataset_settings_fill_in_and_contradictions_name_both_values(tmp_path):
    from ctloop.config.settings import keep_dataset, kept_dataset, reconcile_dataset

    home_file = tmp_path / "home" / CONFIG_FILENAME
    added = keep_dataset(home_file, {"target": "churned", "exclude": "a, b", "id": None})
    assert added == {"target": "churned", "exclude": ["a", "b"]}
    assert kept_dataset(home_file) == {"target": "churned", "exclude": ["a", "b"]}
    # a value already kept is not replaced, a new one is added beside it
    assert keep_dataset(home_file, {"target": "other", "task": Task.REGRESSION}) == {
        "task": "regression"
    }
    kept = kept_dataset(home_file)
    assert kept["target"] == "churned" and kept["task"] == "regression"

    filled = reconcile_dataset(Config(), kept, home_file, given={})
    assert filled.dataset.target == "churned"
    assert filled.dataset.task == Task.REGRESSION
    assert filled.dataset.exclude == ["a", "b"]
    same = load_config(overrides={"dataset.exclude": "a,b"}, environ={})
    assert reconcile_dataset(same, kept, home_file, {"exclude": "--exclude"}).dataset.target

    other = load_config(overrides={"dataset.target": "y"}, environ={})
    with pytest.raises(ConfigError) as info:
        reconcile_dataset(other, kept, home_file, {"target": "--target"})
    message = str(info.value)
    for needle in ("dataset.target", "'churned'", "'y'", "--target", str(home_file), "edit"):
        assert needle in message, message


def test_kept_dataset_leaves_the_rest_of_the_file(tmp_path):
    from ctloop.config.settings import keep_dataset

    path = write(tmp_path / CONFIG_FILENAME, "project: loans\ntraining:\n  window_days: 7\n")
    keep_dataset(path, {"timestamp": "event_time"})
    cfg = load_config(path, environ={})
    assert cfg.project == "loans" and cfg.training.window_days == 7
    assert cfg.dataset.timestamp == "event_time"
