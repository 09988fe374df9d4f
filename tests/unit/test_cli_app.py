"""The command line's own options, without a home or a flow."""

from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

from ctloop.cli.main import app


def test_version_prints_the_installed_version_and_exits_zero():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"ctloop {version('ctloop')}"


def test_no_arguments_shows_the_commands():
    result = CliRunner().invoke(app, [])
    assert "status" in result.output and "ingest" in result.output
