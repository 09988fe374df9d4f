"""The command line's own options, without a home or a flow."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from ctloop.cli.main import app


def test_version_prints_the_installed_version_and_exits_zero():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"ctloop {version('ctloop')}"


def test_no_arguments_shows_the_commands():
    result = CliRunner().invoke(app, [])
    assert "status" in result.output and "ingest" in result.output


def test_help_shows_flags_as_flags_and_values_with_their_type():
    import typer.main

    commands = typer.main.get_command(app).commands
    for name in commands:
        result = CliRunner().invoke(app, [name, "--help"], terminal_width=200)
        assert result.exit_code == 0, (name, result.output)
        assert "<bool>" not in result.output, (name, result.output)
    lineage = CliRunner().invoke(app, ["lineage", "--help"], terminal_width=200).output
    assert "--json " in lineage and "<path>" in lineage  # --config still says what it takes
    assert "v3" in lineage and "champion" in lineage


class _Ref:
    def __init__(self, version, semver):
        self.version, self.semver = version, semver


class _Registry:
    refs = [_Ref(1, "1.0.0"), _Ref(2, "1.1.0"), _Ref(3, "2.0.0")]
    aliases = {"champion": 3, "challenger": 2}

    def version(self, n):
        return next((r for r in self.refs if r.version == n), None)

    def versions(self):
        return list(self.refs)

    def by_alias(self, name):
        return self.version(self.aliases.get(name, 0))


def test_a_version_is_a_number_v_number_semver_or_alias():
    import pytest

    from ctloop.errors import InputError
    from ctloop.registry.lineage import resolve_version

    registry = _Registry()
    for text, expected in [
        ("3", 3),
        ("v3", 3),
        ("V1", 1),
        ("1.1.0", 2),
        ("v2.0.0", 3),
        ("champion", 3),
        ("Challenger", 2),
        (" 2 ", 2),
    ]:
        assert resolve_version(registry, text) == expected, text
    for text, needle in [
        ("7", "registered: v1, v2, v3"),
        ("9.9.9", "no version has this semver"),
        ("staging", "no version has the alias 'staging'"),
        ("3.x", "not a version"),
    ]:
        with pytest.raises(InputError, match=needle):
            resolve_version(registry, text)


def test_an_error_naming_square_brackets_prints_them(capsys):
    """A column such as `flow [l/s]` in an error message is not read as rich markup (it
    vanished, or `[/b]` raised a MarkupError traceback)."""
    import typer

    from ctloop.cli.app import fail

    with pytest.raises(typer.Exit):
        fail("no column 'a [/b]' (columns: Water flow [l/s], pump [id])")
    assert "no column 'a [/b]' (columns: Water flow [l/s], pump [id])" in capsys.readouterr().err


def test_json_answers_write_null_for_nan(capsys):
    import json
    import math

    from ctloop.cli.options import print_json

    print_json({"mean": math.nan, "rows": [1.0, math.inf], "ok": 0.5})
    assert json.loads(capsys.readouterr().out) == {"mean": None, "rows": [1.0, None], "ok": 0.5}


def test_the_first_ingest_guesses_from_the_first_file_that_holds_the_target(tmp_path):
    """As `ctloop landing` sees a folder: a features-only file and a FIFO first (the FIFO is
    never opened: reading it would hang), then the labelled file the guess comes from; a lake
    that holds a batch never guesses."""
    import os

    import pandas as pd

    from ctloop.cli.data import first_ingest_task
    from ctloop.config.settings import Config
    from ctloop.stores.home import home_of

    config = Config.model_validate(
        {"dataset": {"target": "weight"}, "paths": {"home": str(tmp_path / "home")}}
    )
    root = home_of(config).ensure()
    features = tmp_path / "a_features.csv"
    pd.DataFrame({"diet": [1, 2]}).to_csv(features, index=False)
    fifo = tmp_path / "b_pipe.csv"
    os.mkfifo(fifo)
    labelled = tmp_path / "c_labelled.csv"
    pd.DataFrame({"diet": range(30), "weight": range(40, 100, 2)}).to_csv(labelled, index=False)
    task, line = first_ingest_task(config, root, [features, fifo, labelled])
    assert task == "regression" and "guessed from 'weight' (30 distinct whole numbers)" in line
    given = Config.model_validate(
        {"dataset": {"target": "weight", "task": "multiclass"}, "paths": {"home": str(root.root)}}
    )
    assert first_ingest_task(given, root, [labelled]) is None  # set: never guessed
