"""The accelerate config files shipped in recipes/accelerate/ load with accelerate's own loader."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import launch_command_parser

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "recipes" / "accelerate").glob("*.yaml"))


def test_there_is_a_config_for_ddp_zero_2_zero_3_fsdp_and_two_nodes():
    assert {p.stem for p in CONFIGS} >= {
        "multi_gpu",
        "deepspeed_zero2",
        "deepspeed_zero3",
        "fsdp",
        "two_nodes",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_accelerate_loads_the_config_and_knows_every_nested_key(path):
    config = ClusterConfig.from_yaml_file(str(path))  # refuses unknown top-level keys itself
    assert config.num_processes >= 8 and config.mixed_precision == "no"  # run.dtype sets precision
    # `accelerate launch` turns deepspeed_config.x into --x and fsdp_config.x into --fsdp_x: a key
    # its parser lacks would be dropped without a word
    known = {action.dest for action in launch_command_parser()._actions}
    nested = [*(config.deepspeed_config or {}), *(config.fsdp_config or {})]
    assert [key for key in nested if key not in known] == []
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# ") and "accelerate launch --config_file recipes/accelerate/" in first_line
