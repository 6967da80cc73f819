"""Recipes: load YAML with overrides, validate against the code, instantiate `_component_` nodes.

A recipe names its pipeline (`pipeline: rlhfv.pipelines.sft.main`); the pipeline's first
parameter is annotated with a dataclass that lists every top-level key the recipe may use. A
pipeline module may add its own checks as `check_recipe(cfg, source, prefix)`, raising ValueError. Any node
`{_component_: dotted.path, **kwargs}` is bound to its target's signature. Both checks run before
any work, and every error names the recipe file, the key path and the value.

A multi-stage recipe has `stages: {name: {pipeline: …, …}, …}` run in order; each stage gets its own
run folder `<run.dir>/<stage>` and a later stage refers to an earlier one with interpolation, e.g.
`${stages.grm.run.dir}/final`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

COMPONENT = "_component_"


class RecipeError(ValueError):
    """A recipe problem found before any work starts."""


class ExistingPath(str):
    """Annotation for a component argument that must name an existing file or folder."""


@dataclass
class RunConfig:
    """Where and how a run keeps its state (every pipeline's config has `run: RunConfig`).

    Attributes:
        name: Run name; the folder is `dir`.
        dir: Run folder (checkpoints, metrics, resolved recipe).
        seed: Seed for every random number generator.
        resume: "never" (refuse an existing run folder with checkpoints), "auto" (continue from
            the latest checkpoint if there is one) or "overwrite" (start again from scratch).
        save_every: Write a checkpoint every this many steps (0: only at the end).
        keep_last: How many `step_N/` checkpoints to keep.
        tensorboard: Also write TensorBoard events (the same as naming "tensorboard" in report_to).
        report_to: Trackers that receive the metrics and sample tables besides metrics.jsonl:
            any of "tensorboard", "wandb", "mlflow" (`rlhfv.training.metrics`).
        device: "auto" (CUDA if present), "cpu" or "cuda".
        dtype: Compute dtype under autocast: "float32" (no autocast), "bfloat16" or "float16".
        cpu_threads: Torch intra-op threads (0: torch's default, one per core). The default 1
            comes from `benchmarks/threads_hf.py` on a busy 2-core machine: SmolLM2-135M sampled
            5.8× and trained 3× slower on 2 threads than on 1 (the threads wait for each other
            whenever another program holds a core). On an idle machine with many cores, or to
            train a larger model on CPU, measure and raise it.
    """

    name: str = "run"
    dir: str = "checkpoints/${.name}"
    seed: int = 0
    resume: str = "never"
    save_every: int = 0
    keep_last: int = 2
    tensorboard: bool = False
    report_to: list[str] = field(default_factory=list)
    device: str = "auto"
    dtype: str = "float32"
    cpu_threads: int = 1


RESUME_MODES = ("never", "auto", "overwrite")


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> DictConfig:
    """Load a recipe, apply `key=value` overrides, validate it; raise RecipeError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # yaml errors carry line numbers in their text
        raise RecipeError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(cfg, DictConfig):
        raise RecipeError(f"{path}: a recipe must be a mapping at the top level")
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        try:
            OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"x={value}"]).x, merge=True, force_add=True)
        except OmegaConfBaseException as e:
            raise RecipeError(f"override {item!r}: {e}") from e
    return validate_recipe(cfg, str(path))


def validate_recipe(cfg: DictConfig, source: str) -> DictConfig:
    """Type-check a whole recipe (all stages) against the code; return it with defaults filled in."""
    if "stages" in cfg:
        if "pipeline" in cfg:
            raise RecipeError(f"{source}: a recipe has either 'pipeline' or 'stages', not both")
        stages = cfg.stages
        if not isinstance(stages, DictConfig) or len(stages) == 0:
            raise RecipeError(f"{source}: 'stages' must map stage names to stage recipes")
        unknown = set(cfg.keys()) - {"stages", "run"}
        if unknown:
            raise RecipeError(f"{source}: unknown top-level key(s) {sorted(unknown)} in a staged recipe")
        run = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg.get("run", {}))
        checked = {}
        for name, stage in stages.items():
            stage_run = OmegaConf.merge(run, stage.get("run", {}))
            stage_run.dir = f"{run.dir}/{name}"
            stage_run.name = f"{run.name}/{name}"
            stage = OmegaConf.merge(stage, {"run": stage_run})
            checked[name] = _validate_stage(stage, source, f"stages.{name}.")
        out = OmegaConf.create({"run": run, "stages": checked})
    else:
        out = _validate_stage(cfg, source, "")
    try:  # resolve interpolations now, so a broken ${…} fails before any work
        resolved = OmegaConf.to_container(out, resolve=True)
    except OmegaConfBaseException as e:
        raise RecipeError(f"{source}: {e}") from e
    check_data_overlap(resolved, source)
    return out


def check_data_overlap(recipe: Any, source: str) -> None:
    """Refuse a recipe whose training data and held-out data can share items.

    Data nodes are the components that take a `split` ("train" / "test" / "all"); the held-out
    ones are those under an `eval_data` or `eval_pairs` key, in any stage. Two nodes read the same data when they
    name the same file (`path`), or, with no file, the same generator. They are disjoint only
    when one reads split "train" and the other split "test" with the same `test_fraction`; the
    same split (whatever `limit` and `seed` pick), or "all", shares items.
    """
    train, held_out = [], []
    for key, node in _data_nodes(recipe, ""):
        (held_out if {"eval_data", "eval_pairs"} & set(key.split(".")) else train).append((key, node))
    for t_key, t in train:
        for e_key, e in held_out:
            if t["source"] != e["source"]:
                continue
            splits = {t["split"], e["split"]}
            if splits == {"train", "test"} and t["test_fraction"] == e["test_fraction"]:
                continue
            why = (
                f"test_fraction {t['test_fraction']} / {e['test_fraction']}"
                if splits == {"train", "test"}
                else f"split {t['split']!r} / {e['split']!r}"
            )
            raise RecipeError(
                f"{source}: training data {t_key.rstrip('.')} and held-out data {e_key.rstrip('.')} "
                f"both read {t['source']} ({why}), so they share items; train on split: train and "
                "evaluate on split: test"
            )


def _data_nodes(node: Any, path: str) -> typing.Iterator[tuple[str, dict[str, Any]]]:
    """(key path, {source, split, test_fraction}) of every component that takes a `split`."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _data_nodes(item, f"{path}{i}.")
        return
    if not isinstance(node, dict):
        return
    if COMPONENT in node:
        try:
            params = inspect.signature(resolve_target(str(node[COMPONENT]))).parameters
        except (TypeError, ValueError):  # builtins without a signature take no split
            params = {}
        if "split" in params:
            empty = inspect.Parameter.empty
            given = {**{k: p.default for k, p in params.items() if p.default is not empty}, **node}
            where = Path(str(node["path"])).resolve().as_posix() if "path" in node else node[COMPONENT]
            yield (
                path,
                {"source": where, "split": given.get("split"), "test_fraction": given.get("test_fraction")},
            )
    for key, child in node.items():
        yield from _data_nodes(child, f"{path}{key}.")


def _validate_stage(cfg: DictConfig, source: str, prefix: str) -> DictConfig:
    if "pipeline" not in cfg:
        raise RecipeError(f"{source}: missing key '{prefix}pipeline' (e.g. rlhfv.pipelines.sft.main)")
    pipeline = resolve_target(str(cfg.pipeline), source, f"{prefix}pipeline")
    schema = pipeline_schema(pipeline)
    body = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "pipeline"])
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), body)
    except OmegaConfBaseException as e:
        raise RecipeError(_explain(e, source, prefix, schema)) from e
    run = merged.run
    if run.resume not in RESUME_MODES:
        raise RecipeError(f"{source}: {prefix}run.resume = {run.resume!r}; choose one of {RESUME_MODES}")
    _validate_components(merged, source, prefix)
    check = getattr(inspect.getmodule(pipeline), "check_recipe", None)  # the pipeline's own checks
    if check is not None:
        try:
            check(merged, source, prefix)
        except ValueError as e:
            raise RecipeError(str(e)) from e
    OmegaConf.set_struct(merged, False)
    merged.pipeline = str(cfg.pipeline)
    return merged


def _explain(e: OmegaConfBaseException, source: str, prefix: str, schema: type) -> str:
    key = getattr(e, "full_key", None) or "?"
    msg = str(e).splitlines()[0]
    if isinstance(e, ConfigKeyError):
        name = key.split(".")[-1]
        valid = [f.name for f in dataclasses.fields(schema)] + ["pipeline"]
        if "." in key:
            parent = key.rsplit(".", 1)[0]
            sub = next((f.type for f in dataclasses.fields(schema) if f.name == parent), None)
            if isinstance(sub, str):
                sub = typing.get_type_hints(schema).get(parent)
            if dataclasses.is_dataclass(sub):
                valid = [f.name for f in dataclasses.fields(sub)]
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"
        return f"{source}: unknown key '{prefix}{key}'{hint}"
    value = getattr(e, "msg", msg)
    return f"{source}: key '{prefix}{key}': {value}"


def pipeline_schema(pipeline: Callable[..., Any]) -> type:
    """The dataclass annotating a pipeline's first parameter."""
    params = list(inspect.signature(pipeline).parameters.values())
    hints = typing.get_type_hints(pipeline)
    schema = hints.get(params[0].name) if params else None
    if schema is None or not dataclasses.is_dataclass(schema):
        raise RecipeError(f"pipeline {pipeline.__module__}.{pipeline.__name__} has no config dataclass")
    return schema


def resolve_target(dotted: str, source: str = "<recipe>", key: str = COMPONENT) -> Any:
    """Import `package.module.attr` (attributes may nest: `pkg.mod.Class.method`)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as e:
            if e.name is not None and not ".".join(parts[:cut]).startswith(e.name):
                raise RecipeError(f"{source}: {key} = {dotted!r}: importing it needs {e.name!r}") from e
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            return obj
        except AttributeError:
            break
    raise RecipeError(f"{source}: {key} = {dotted!r}: no such component (check the dotted path)")


def _validate_components(node: Any, source: str, path: str) -> None:
    if isinstance(node, DictConfig):
        if COMPONENT in node:
            _check_component(node, source, path)
        for key in node.keys():
            if key == COMPONENT:
                continue
            child = node._get_node(key)
            if child is not None and not OmegaConf.is_missing(node, key):
                _validate_components(
                    node[key] if not OmegaConf.is_interpolation(node, key) else None, source, f"{path}{key}."
                )
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _validate_components(item, source, f"{path}{i}.")


def _check_component(node: DictConfig, source: str, path: str) -> None:
    target = resolve_target(str(node[COMPONENT]), source, f"{path}{COMPONENT}")
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return  # builtins without a signature cannot be checked
    params = sig.parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:
        hints = {}
    for key in node.keys():
        if key == COMPONENT:
            continue
        if key not in params and not takes_kwargs:
            close = difflib.get_close_matches(str(key), list(params), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; it takes {', '.join(params)}"
            raise RecipeError(f"{source}: unknown key '{path}{key}' for {node[COMPONENT]}{hint}")
        if OmegaConf.is_interpolation(node, key):
            continue
        _check_value(node[key], hints.get(str(key)), source, f"{path}{key}")


def _check_value(value: Any, hint: Any, source: str, key: str) -> None:
    if hint is None or isinstance(value, (DictConfig, ListConfig)):
        return
    if hint is ExistingPath:
        if not Path(str(value)).exists():
            raise RecipeError(f"{source}: {key} = {value!r}: no such file or folder")
        return
    allowed = _simple_types(hint)
    if allowed is None or value is None and type(None) in allowed:
        return
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return
    if not isinstance(value, tuple(allowed)) or isinstance(value, bool) and bool not in allowed:
        names = " or ".join(t.__name__ for t in allowed)
        raise RecipeError(f"{source}: {key} = {value!r}: expected {names}")


def _simple_types(hint: Any) -> list[type] | None:
    """The plain types a hint allows, or None if it is anything richer (left unchecked)."""
    simple = (int, float, str, bool, type(None))
    if hint in simple:
        return [hint]
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(hint)
        if all(a in simple for a in args):
            return list(args)
    return None


def instantiate(node: Any, *args: Any, **kwargs: Any) -> Any:
    """Build the object a `_component_` node describes; nested nodes are built first.

    Runtime values (parameters to optimise, a model …) are passed as `args`/`kwargs` and go
    before/over the recipe's keyword arguments.
    """
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict) or COMPONENT not in node:
        raise RecipeError(f"expected a node with {COMPONENT}, got {node!r:.80}")
    target = resolve_target(node[COMPONENT])
    recipe_kwargs = {k: _build(v) for k, v in node.items() if k != COMPONENT}
    return target(*args, **{**recipe_kwargs, **kwargs})


def _build(value: Any) -> Any:
    if isinstance(value, dict) and COMPONENT in value:
        return instantiate(value)
    if isinstance(value, dict):
        return {k: _build(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_build(v) for v in value]
    return value


def component_field(default: dict[str, Any] | None = None) -> Any:
    """A dataclass field holding a `_component_` node (any mapping; checked by its own signature)."""
    return field(default_factory=lambda: dict(default) if default else {})


STAGE_OUTPUT = re.compile(r"\$\{stages\.([^.}]+)\.run\.dir\}")


def stage_inputs(stage: DictConfig, path: str = "") -> list[tuple[str, str, str | None]]:
    """What a stage reads that may only exist once earlier work is done: (key, path, stage).

    These are the values that interpolate an earlier stage's folder (`${stages.sft.run.dir}/final`,
    with that stage's name) and the interpolated arguments typed `ExistingPath` (stage None);
    `load_recipe` checks the plain `ExistingPath` values already, before any stage runs.
    """
    found: list[tuple[str, str, str | None]] = []
    hints: dict[str, Any] = {}
    if COMPONENT in stage:
        target = resolve_target(str(stage[COMPONENT]))
        try:
            hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
        except Exception:  # unresolvable annotations: nothing typed to check
            hints = {}
    for key in map(str, stage.keys()):
        child, where = stage._get_node(key), f"{path}{key}"
        if child is None or child._is_none() or OmegaConf.is_missing(stage, key):
            continue
        if OmegaConf.is_interpolation(stage, key):
            refers = STAGE_OUTPUT.search(str(child._value()))  # type: ignore[union-attr]
            if refers or hints.get(key) is ExistingPath:
                found.append((where, str(stage[key]), refers.group(1) if refers else None))
        elif isinstance(child, DictConfig):
            found += stage_inputs(child, f"{where}.")
        elif isinstance(child, ListConfig):
            for i, item in enumerate(child):
                if isinstance(item, DictConfig):
                    found += stage_inputs(item, f"{where}.{i}.")
    return found


def stages_of(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """(name, stage config) pairs in run order; a single-pipeline recipe is one unnamed stage."""
    if "stages" in cfg:
        return [(str(k), v) for k, v in cfg.stages.items()]
    return [("", cfg)]
