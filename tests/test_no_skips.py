"""Under ALLINONE_NO_SKIPS=1 (tools/test.sh) a skipped test fails the run, unless it says it
does not apply to the installed ESPnet line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NOT_ON_THIS_LINE

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # pytest in a subprocess: seconds each
@pytest.mark.parametrize("module_level", [False, True])
@pytest.mark.parametrize("reason,strict,rc", [
    ("sox is not installed", "1", 1),
    ("sox is not installed", "", 0),
    (f"{NOT_ON_THIS_LINE}needs ESPnet 202609+", "1", 0),
])
def test_a_skip_fails_the_strict_run(tmp_path, reason, strict, rc, module_level):
    (tmp_path / "test_one.py").write_text(
        "import pytest\n\n"
        "def test_passes():\n    pass\n\n"
        f"def test_skips():\n    pytest.skip({reason!r})\n"
    )
    if module_level:  # as pytest.importorskip at the top of a module
        (tmp_path / "test_two.py").write_text(f"import pytest\n\npytest.skip({reason!r}, allow_module_level=True)\n")
    env = {**os.environ, "ALLINONE_NO_SKIPS": strict, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == rc, proc.stdout[-3000:]
    assert f"1 passed, {1 + module_level} skipped" in proc.stdout
    assert (f"test_one.py::test_skips: {reason}" in proc.stdout) == (rc == 1), proc.stdout[-3000:]
    if module_level:
        assert (f"test_two.py: {reason}" in proc.stdout) == (rc == 1), proc.stdout[-3000:]
