"""DPO pipeline: learns on every kind of builder, both reference modes agree, exact resume, and
non-finite losses stop or skip."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from rlhfv.config import validate_recipe
from rlhfv.pipelines.dpo import main
from rlhfv.training.checkpoint import latest_checkpoint
from rlhfv.training.metrics import read_metrics

TEXT = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 0}
PAIRS = {"_component_": "rlhfv.data.pairs.ShapesPairs", "size": 24, "seed": 0}


def run_dpo(folder, **overrides):
    cfg = {
        "pipeline": "rlhfv.pipelines.dpo.main",
        "run": {"dir": str(folder), "seed": 0, "device": "cpu", "resume": "auto", "cpu_threads": 1},
        "policy": TEXT,
        "train_data": PAIRS,
        "optimizer": {"_component_": "torch.optim.AdamW", "lr": 5e-3},
        "steps": 3,
        "batch_size": 4,
        "log_every": 1,
        "beta": 0.5,
    }
    cfg.update(overrides)
    summary = main(validate_recipe(OmegaConf.create(cfg), "test_dpo"))
    return summary, read_metrics(folder / "metrics.jsonl")


@pytest.mark.parametrize(
    "policy",
    [
        TEXT,
        {"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl", "seed": 0},
        {"_component_": "rlhfv.models.clip_lm.tiny_clip_lm", "seed": 0},
        {"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl", "seed": 0, "lora": {"r": 4, "alpha": 8}},
    ],
    ids=["text", "qwen2_vl", "clip_lm", "qwen2_vl_lora"],
)
def test_dpo_raises_the_chosen_margin_on_training_pairs_for_every_builder(tmp_path, policy):
    # the same 4 pairs every step (size 4 = batch), so the margin on them must grow
    summary, rows = run_dpo(tmp_path, policy=policy, train_data={**PAIRS, "size": 4}, steps=4)
    first, last = rows[0], rows[-1]
    assert first["reward/margin"] == pytest.approx(0.0, abs=1e-5)  # the policy starts as its reference
    assert first["loss/dpo"] == pytest.approx(0.6931, abs=1e-3)  # −log σ(0)
    assert last["reward/margin"] > 0.05 and last["loss/dpo"] < first["loss/dpo"]
    for key in (
        "reward/accuracy",
        "reward/chosen",
        "reward/rejected",
        "logprobs/chosen",
        "logprobs/rejected",
    ):
        assert key in last
    assert (tmp_path / "final" / "rlhfv_model.json").is_file() and "final_loss" in summary


def test_precomputed_reference_logprobs_give_the_run_of_a_live_reference(tmp_path):
    held_out = {**PAIRS, "split": "test", "size": 6}
    _, live = run_dpo(tmp_path / "live", eval_pairs=held_out)
    summary, table = run_dpo(tmp_path / "table", eval_pairs=held_out, precompute_ref_logprobs=True)
    for a, b in zip(live, table, strict=True):
        for key in ("loss/dpo", "reward/margin", "eval/reward_accuracy"):
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-5)
    assert "after/reward_accuracy" in summary


def test_dpo_resume_reads_the_reference_table_from_the_checkpoint(tmp_path, monkeypatch):
    base = {"eval_pairs": {**PAIRS, "split": "test", "size": 4}, "precompute_ref_logprobs": True}
    _, whole = run_dpo(tmp_path / "whole", steps=4, **base)
    folder = tmp_path / "cut"
    run_dpo(folder, steps=2, **base, run={"dir": str(folder), "seed": 0, "device": "cpu", "save_every": 2})
    assert latest_checkpoint(folder).name == "step_2"
    import rlhfv.pipelines.dpo as dpo

    def no_reference(*args, **kwargs):
        raise AssertionError("a resumed run with a reference table must not score the reference again")

    monkeypatch.setattr(dpo, "reference_table", no_reference)
    _, resumed = run_dpo(
        folder, steps=4, **base, run={"dir": str(folder), "seed": 0, "device": "cpu", "resume": "auto"}
    )
    by_step = {r["step"]: r for r in resumed}
    for row in whole[2:]:
        for key in ("loss/dpo", "reward/margin", "optim/grad_norm"):
            assert by_step[row["step"]][key] == pytest.approx(row[key], rel=1e-5, abs=1e-7)


def test_nonfinite_dpo_loss_stops_the_run_or_skips_the_step(tmp_path):
    blow_up = {"_component_": "torch.optim.SGD", "lr": 1e30}  # step 1 sends the weights to ±inf
    with pytest.raises(FloatingPointError, match=r"step 2: DPO loss is nan .*policy log-probs"):
        run_dpo(tmp_path / "stop", optimizer=blow_up, max_grad_norm=1e30)
    assert latest_checkpoint(tmp_path / "stop") is None
    _, rows = run_dpo(tmp_path / "skip", optimizer=blow_up, max_grad_norm=1e30, on_nonfinite="skip")
    assert [r["skipped/nonfinite"] for r in rows] == [0.0, 1.0, 1.0]


class EchoPairs:
    """Two ShapesVQA pairs, the second with both responses the same."""

    def __init__(self):
        from rlhfv.data.pairs import ShapesPairs

        self.pairs = [ShapesPairs(size=2)[i] for i in range(2)]
        self.pairs[1].responses[0] = self.pairs[1].responses[1]

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return self.pairs[i]


def test_dpo_refuses_a_pair_with_identical_responses(tmp_path):
    with pytest.raises(ValueError, match=r"EchoPairs\[1\] .*two different non-empty responses"):
        run_dpo(tmp_path, train_data={"_component_": "tests.pipelines.test_dpo.EchoPairs"}, batch_size=2)


def test_dpo_trains_on_an_annotation_export_folder(tmp_path):
    """The export's trl.jsonl (as `rlhfv.store.export.trl_row` writes it) read straight from the folder."""
    import json

    from rlhfv.data.pairs import ShapesPairs
    from rlhfv.data.preference import PairwisePreference
    from rlhfv.store.export import trl_row

    export = tmp_path / "v1"
    (export / "images").mkdir(parents=True)
    with (export / "trl.jsonl").open("w") as f:
        for i in range(3):
            pair = ShapesPairs(size=3)[i]
            pair.prompt.images[0].save(export / "images" / f"{i}.png")
            pref = PairwisePreference(
                f"t{i}", pair.prompt.text, pair.responses, pair.preferred, [f"images/{i}.png"]
            )
            f.write(json.dumps(trl_row(pref)) + "\n")
    policy = {"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl", "seed": 0}
    data = {"_component_": "rlhfv.data.pair_files.PairFile", "path": str(export)}
    summary, rows = run_dpo(tmp_path / "run", policy=policy, train_data=data, batch_size=3, steps=2)
    assert rows[-1]["reward/margin"] > 0 and "final_loss" in summary
