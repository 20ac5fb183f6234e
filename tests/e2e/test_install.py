"""A clean install works: the wheel carries templates, config, vocabulary and migrations, and runs outside the repo.

The wheel is built without network (`--no-build-isolation`: hatchling comes from the dev venv) and
installed with `--no-deps` into a fresh virtualenv. Its dependencies are taken from the dev venv's
site-packages through PYTHONPATH, which adds that folder to sys.path WITHOUT running its .pth files
-- so the editable install of the repo is not active, and `mailflow` can only come from the wheel.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import mailflow

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)], cwd=out)
    assert proc.returncode == 0, proc.stderr
    (path,) = out.glob("mailflow-*.whl")
    return path


def test_wheel_ships_the_data_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("mailflow/_templates/emails/fr/introduction.mentor.j2", "mailflow/_templates/emails/_layout/html.j2",
                     "mailflow/_config/mailflow.toml", "mailflow/_config/demo-pairs.csv", "mailflow/data/vocabulary.toml",
                     "mailflow/migrations/env.py", "mailflow/migrations/script.py.mako"):  # fmt: skip
        assert required in names, required
    assert any(n.startswith("mailflow/migrations/versions/") and n.endswith(".py") for n in names)
    assert not any(n.startswith("tests/") for n in names)


def test_installed_wheel_runs_outside_the_repo(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path).returncode == 0
    py = venv / "bin" / "python"
    proc = _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    target = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout.strip()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": sysconfig.get_paths()["purelib"], "HOME": str(tmp_path)}
    work = tmp_path / "elsewhere"
    work.mkdir()

    where = _run([str(py), "-c", "import mailflow; print(mailflow.__file__)"], cwd=work, env=env)
    assert where.stdout.strip().startswith(target), where.stdout + where.stderr
    version = _run([str(venv / "bin" / "mailflow"), "--version"], cwd=work, env=env)
    assert version.returncode == 0 and version.stdout.strip() == f"mailflow {mailflow.__version__}", version.stderr
    help_ = _run([str(py), "-m", "mailflow", "--help"], cwd=work, env=env)
    assert help_.returncode == 0 and "Example:" in help_.stdout, help_.stderr
    check = _run([str(py), "-m", "mailflow", "templates", "check"], cwd=work, env=env)
    assert check.returncode == 0, check.stderr
    init = _run([str(py), "-m", "mailflow", "init"], cwd=work, env={**env, "MAILFLOW_DATABASE__URL": f"sqlite:///{work / 'm.db'}"})
    assert init.returncode == 0, init.stderr  # the migrations are found inside the wheel
    assert (work / "m.db").is_file()
