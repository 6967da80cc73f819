"""One tiny judge and one real `rlhfv serve grm` process for the module's tests."""

from __future__ import annotations

import pytest

from tests.serve.judges import grm_server, save_sharp_judge

TOKEN = "test-token-7f3a"
CAPS = [
    "--max-group",
    "6",
    "--max-image-bytes",
    "20000",
    "--max-image-pixels",
    "4096",
    "--max-request-bytes",
    "200000",
]


@pytest.fixture(scope="session")
def judge_folder(tmp_path_factory):
    return save_sharp_judge(tmp_path_factory.mktemp("grm") / "judge")


@pytest.fixture(scope="session")
def judge_model(judge_folder):
    from rlhfv.models.base import load_model

    return load_model(str(judge_folder))


@pytest.fixture(scope="module")
def server(judge_folder, tmp_path_factory):
    """The server with a token on loopback, an image root holding one small image, and caps."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    Image.new("RGB", (16, 16), (200, 30, 30)).save(root / "red.png")
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKEN + "\n")
    with grm_server(judge_folder, "--token-file", str(token_file), "--image-root", str(root), *CAPS) as url:
        yield {"url": url, "token_file": str(token_file), "root": root}
