import subprocess
import sys

import pytest

from densevision.cli import entry_point
from densevision.data.checks import DatasetError
from densevision.engine.errors import CheckpointError
from densevision.errors import DensevisionError
from densevision.export import ExportError
from densevision.registry import ConfigError


@pytest.mark.parametrize("error", [ConfigError, DatasetError, CheckpointError, ExportError])
def test_user_errors_share_one_root(error):
    assert issubclass(error, DensevisionError)


@pytest.mark.parametrize(
    "raised", [ConfigError("bad key 'x'\n  in cfg.py"), FileNotFoundError(2, "No such file", "a.pth")]
)
def test_a_user_error_is_one_line_and_status_1(raised, capsys):
    @entry_point
    def main(argv):
        raise raised

    assert main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_a_bug_keeps_its_traceback():
    @entry_point
    def main(argv):
        raise ValueError("a bug, not a user error")

    with pytest.raises(ValueError, match="a bug"):
        main([])


def test_debug_variable_shows_the_traceback_of_user_errors(monkeypatch):
    monkeypatch.setenv("DENSEVISION_DEBUG", "1")

    @entry_point
    def main(argv):
        raise ConfigError("bad")

    with pytest.raises(ConfigError):
        main([])


def test_importing_inference_does_not_load_the_training_runner():
    code = "import sys, densevision.inference; print('densevision.engine.runner' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
