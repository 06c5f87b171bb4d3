"""The kdlens console script: --version, --help and env, through typer's runner and the installed entry point."""

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import kdlens
from kdlens.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"kdlens {kdlens.__version__}"


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "--version" in result.output and "env" in result.output


def test_env_reports_torch():
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 0
    assert "torch" in result.output and kdlens.__version__ in result.output


def test_unknown_command_fails_with_usage():
    result = runner.invoke(app, ["audti"])
    assert result.exit_code != 0
    assert "No such command" in result.output


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "kdlens"  # the entry point pip wrote beside this interpreter
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"kdlens {kdlens.__version__}"
