"""A non-editable install (`pip install .`) carries the annotation app: `rlhfv annotate` serves it
from outside the source tree."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_non_editable_install_serves_the_annotation_app_from_outside_the_tree(tmp_path):
    # The sources alone, copied, so the build leaves nothing in the checkout.
    source = tmp_path / "src"
    for part in ("rlhfv", "annotation_ui"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / file, source / file)
    # A fresh venv that borrows this environment's installed libraries (torch, streamlit …) through a
    # .pth path, which does not run their .pth hooks: an editable rlhfv there stays invisible.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)],
        check=True, cwd=tmp_path,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [python, "-c", "import rlhfv.store.cli as c; print(c.__file__); print(c.app_path())"],
        capture_output=True, text=True, check=True, cwd=elsewhere, env={"PATH": os.environ["PATH"]},
    ).stdout.split()  # fmt: skip
    assert all(Path(p).is_relative_to(site) for p in where), where  # the installed copy, app included

    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "RLHFV_ADMIN_PASSWORD": "correct horse"}
    server = subprocess.Popen(
        [venv / "bin" / "rlhfv", "annotate", "serve", "--db", str(tmp_path / "labels.db"),
         "--port", str(port), "--address", "127.0.0.1"],
        cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline, health = time.monotonic() + 90, ""
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    health = r.read().decode()
                break
            except OSError:
                time.sleep(1)
        assert health == "ok", server.stdout.read().decode() if server.poll() is not None else "no answer"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200 and b"<title>Streamlit</title>" in r.read()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
