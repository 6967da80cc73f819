"""Packaging that pyproject.toml cannot say alone: the Streamlit app's folder `annotation_ui/`
(kept at the top of the source tree) is installed as the package data `rlhfv.annotation_ui`, so
`rlhfv annotate` finds its app in a non-editable install too (`rlhfv.store.cli.app_path`)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["rlhfv", "rlhfv.*"]), "rlhfv.annotation_ui"],
    package_dir={"rlhfv.annotation_ui": "annotation_ui"},
)
