"""`rlhfv run | validate | ls | eval | annotate | models | engine | serve | export`.

`run` and `validate` live here; the other commands hand their arguments to the module that owns
them (`rlhfv.grm.evaluate`, `rlhfv.store.cli`, `rlhfv.models.hub`), which keeps `rlhfv --help` fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rlhfv.config import RecipeError, load_recipe, resolve_target, stage_inputs, stages_of

DELEGATED = {
    "eval": ("rlhfv.grm.evaluate", "evaluate a reward model: rlhfv eval grm --help"),
    "annotate": ("rlhfv.store.cli", "the annotation app and its data: rlhfv annotate --help"),
    "models": ("rlhfv.models.hub", "get pretrained models: rlhfv models pull smollm2-135m-instruct"),
    "engine": ("rlhfv.engine.install", "rollout engine environments: rlhfv engine install vllm"),
    "export": ("rlhfv.models.export", "a trained model as an HF folder: rlhfv export RUN/final --to DIR"),
    "serve": ("rlhfv.serve.grm", "a generative reward model as an HTTP service: rlhfv serve grm --help"),
}


def cmd_run(recipe: str, overrides: list[str], only: str | None = None) -> int:
    """Run a recipe's stages in order, on every process of a launch (torchrun, accelerate launch).

    With several processes they first join one process group and check that they all loaded
    the same recipe; before each stage every process waits until the earlier stages are written
    (a barrier) and checks that it sees the stage's inputs. Any failed check stops every process
    with one message naming the ranks.
    """
    from rlhfv.training.processes import ProcessesDisagree

    try:
        return run_stages(recipe, overrides, only)
    except ProcessesDisagree as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run_stages(recipe: str, overrides: list[str], only: str | None) -> int:
    from rlhfv.training.processes import agree, check_same_everywhere, join_process_group, rank_and_world
    from rlhfv.training.run import agree_on_run_folder, pick_device

    rank, world = rank_and_world()
    cfg, problem = None, None
    try:
        cfg = load_recipe(recipe, overrides)
        launcher_mismatch(recipe, stages_of(cfg))
    except RecipeError as e:
        if world == 1:
            raise
        problem = str(e)
    if world > 1:
        first_device = str(stages_of(cfg)[0][1].run.device) if cfg is not None else "auto"
        join_process_group(pick_device(first_device))
        agree(problem)
        check_same_everywhere(OmegaConf.to_yaml(cfg, resolve=True), f"recipe {recipe} (with overrides)")
    assert cfg is not None
    stages = stages_of(cfg)
    if only:
        wanted = [s.strip() for s in only.split(",") if s.strip()]
        names = [n for n, _ in stages]
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise RecipeError(f"{recipe}: --stages names {unknown}; the recipe's stages are {names}")
        stages = [(n, s) for n, s in stages if n in wanted]
    results, log = {}, logging.getLogger("rlhfv")
    for name, stage in stages:
        agree(None)  # a barrier: rank 0 has written the stages before this one
        agree(missing_input(cfg, name, stage, world))
        agree_on_run_folder(stage)  # where the stage resumes, decided by rank 0 for all
        pipeline = resolve_target(str(stage.pipeline), recipe, "pipeline")
        label = f"stage '{name}'" if name else str(stage.pipeline)
        log.info("running %s in %s", label, stage.run.dir)
        results[name or "result"] = pipeline(stage)
    if rank > 0:  # one report of the results, not one a process
        return 0
    print(json.dumps(results if len(results) > 1 else next(iter(results.values())), indent=2, default=str))
    if len(results) > 1:
        for line in accuracy_table(results):
            log.info(line)
    return 0


def launcher_mismatch(recipe: str, stages: list[tuple[str, DictConfig]]) -> None:
    """Refuse a recipe that shards otherwise than the accelerate config file it was launched with.

    The recipe chooses the strategy (`zero_stage`, `strategy`); `accelerate launch` with a
    DeepSpeed or FSDP config file (recipes/accelerate/) says what the user meant, in the
    environment it gives each process. A mismatch would silently train otherwise than asked."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        want = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
        for name, stage in stages:
            if want and "zero_stage" in stage and str(stage.zero_stage) != want:
                raise RecipeError(
                    f"{recipe}: launched with an accelerate DeepSpeed ZeRO-{want} config, but "
                    f"{f'stages.{name}.' if name else ''}zero_stage = {stage.zero_stage}; set zero_stage={want} "
                    "(the recipe chooses the strategy) or launch with another config file"
                )
    if os.environ.get("ACCELERATE_USE_FSDP") == "true":
        for name, stage in stages:
            if "zero_stage" in stage and stage.get("strategy") != "fsdp":
                raise RecipeError(
                    f"{recipe}: launched with an accelerate FSDP config, but "
                    f"{f'stages.{name}.' if name else ''}strategy = {stage.get('strategy')!r}; set strategy=fsdp "
                    "(the recipe chooses the strategy) or launch with another config file"
                )


def missing_input(cfg: DictConfig, name: str, stage: DictConfig, world: int) -> str | None:
    """Why this process cannot start stage `name` yet (an input it cannot see), or None.

    An earlier stage's output counts only once that stage wrote its summary, the last file a
    run writes: a folder without it is half-written (or its run was killed)."""
    from rlhfv.training.run import FINISHED

    for key, path, producer in stage_inputs(stage):
        finished = Path(str(cfg.stages[producer].run.dir), FINISHED) if producer else None
        if Path(path).exists() and (finished is None or finished.is_file()):
            continue
        needs = f"stage '{name}' needs {path} ({key})"
        if world > 1:  # on a shared filesystem rank 0 has written it by now: this node cannot see it
            return (
                f"{needs}, which is missing or unfinished on this node; every process reads the "
                "earlier stages' folders, so run.dir must be on a shared filesystem that all nodes mount"
            )
        if producer:
            return (
                f"{needs}, which stage '{producer}' has not finished: run that stage first, or override {key}"
            )
        return f"{needs}, which does not exist"
    return None


def accuracy_table(results: dict[str, dict[str, float]]) -> list[str]:
    """One line per stage that measured held-out accuracy: before -> after, and per task family.

    A multi-stage recipe's stages each log theirs as they finish; this repeats them together at
    the end, where a user reads them (the GRM's stages score judgements, the policy's answers)."""
    lines = ["held-out accuracy by stage (before -> after):"]
    width = max(map(len, results))
    for name, summary in results.items():
        if "after/accuracy" not in summary:
            continue
        before = summary.get("before/accuracy")
        start = "  -  " if before is None else f"{before:.3f}"
        line = f"  {name:<{width}}  {start} -> {summary['after/accuracy']:.3f}"
        families = sorted(k.split("_", 1)[1] for k in summary if k.startswith("after/accuracy_"))
        if len(families) > 1:  # one family (a judge's "judge") says nothing the total does not
            changes = (
                f"{f} {summary.get(f'before/accuracy_{f}', float('nan')):.2f} -> {summary[f'after/accuracy_{f}']:.2f}"
                for f in families
            )
            line += f"  ({', '.join(changes)})"
        lines.append(line)
    return lines if len(lines) > 1 else []


def cmd_validate(recipe: str, overrides: list[str]) -> int:
    cfg = load_recipe(recipe, overrides)
    names = [n or str(s.pipeline) for n, s in stages_of(cfg)]
    print(f"{recipe}: ok ({', '.join(names)})")
    return 0


def cmd_ls(root: str) -> int:
    recipes = sorted(Path(root, "recipes").glob("*.yaml"))
    print("recipes:")
    for path in recipes:
        first = path.read_text().splitlines()[:1]
        purpose = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        if path.is_symlink():  # quickstart.yaml names the flagship recipe
            purpose = f"(= {path.readlink().as_posix()}) {purpose}"
        print(f"  {path.as_posix():40s} {purpose}")
    runs = sorted(p.parent for p in Path(root, "checkpoints").glob("**/recipe.yaml"))
    print("runs:")
    for run in runs:
        steps = sorted(int(p.name[5:]) for p in run.glob("step_*") if p.name[5:].isdigit())
        status = (
            "finished"
            if (run / "summary.json").exists()
            else f"last checkpoint step {steps[-1]}"
            if steps
            else "no checkpoint"
        )
        print(f"  {run.as_posix():40s} {status}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))  # set by launchers
    label = f" rank {rank}" if world > 1 else ""  # several processes print into one terminal
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s{label} %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]][0])
        return int(module.main(argv[1:]) or 0)
    parser = argparse.ArgumentParser(
        prog="rlhfv", description="Multimodal RLHF with generative reward models"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "validate"):
        p = sub.add_parser(name, help=f"{name} a recipe; key=value pairs override recipe values")
        p.add_argument("recipe")
        p.add_argument("overrides", nargs="*", help="e.g. run.seed=1 steps=50")
    run_parser = sub.choices["run"]
    run_parser.add_argument(
        "--stages",
        help="multi-stage recipes: run only these stages (comma-separated, in recipe order); "
        "paths to other stages' outputs must then exist or be overridden",
    )
    p = sub.add_parser("ls", help="list recipes and runs")
    p.add_argument("--root", default=".")
    for name, (_, text) in DELEGATED.items():
        sub.add_parser(name, help=text)
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "run" or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # key=value overrides after --stages
        args.overrides += extra
    try:
        if args.command == "run":
            return cmd_run(args.recipe, args.overrides, args.stages)
        if args.command == "validate":
            return cmd_validate(args.recipe, args.overrides)
        return cmd_ls(args.root)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if world > 1:  # torchrun stops the other processes; this line says which one failed, and why
            from rlhfv.training.processes import where

            logging.getLogger("rlhfv").error("%s failed: %s: %s", where(rank), type(e).__name__, e)
        raise


if __name__ == "__main__":
    sys.exit(main())
