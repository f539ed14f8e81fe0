"""The README quickstart runs exactly as written, and .ci/run runs the README's test command."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_quickstart_runs_as_written(tmp_path):
    block = re.search(r"<!-- quickstart:start -->\s*```python\n(.*?)```", README, re.S)
    assert block, "README quickstart block not found"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 25
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "quickstart.png").stat().st_size > 10_000
    m = re.search(r"best from checkpoint step (\d+) of (\d+)", proc.stdout)
    assert m, proc.stdout
    # the point of the library: fine-tuned loss is best strictly before the last checkpoint
    assert int(m.group(1)) < int(m.group(2))


def test_ci_runs_the_readme_test_command():
    cmds = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    test_cmd = next(c for c in cmds if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd.strip() in ci
