from tests.serve.conftest import judge_folder, judge_model  # noqa: F401 (shared fixtures)
