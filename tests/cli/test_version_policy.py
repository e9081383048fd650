"""`mfn package --version-policy` refuses a form it cannot read with one line naming the option and the forms."""

import pytest
from click.testing import CliRunner

from mfn.cli.main import cli
from tests.conftest import EXAMPLES

TEXT_STATS = f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats"


@pytest.mark.parametrize("policy", ["newest", "latest:x"])
def test_an_unreadable_version_policy_is_one_line_without_a_traceback(tmp_path, policy):
    result = CliRunner().invoke(cli, ["package", TEXT_STATS, "-o", str(tmp_path / "repo"), "--version-policy", policy])
    assert result.exit_code == 2
    assert f"Invalid value for --version-policy: version policy '{policy}': use 'all', 'latest[:N]' or " \
           "'specific:1,2'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "repo").exists()
