"""Every command quoted on RESULTS.md still parses, so a reader can copy any of them.

A command is any shell line in a code block (fenced or indented; `&&` chains split) or an inline
code span that starts with `rlhfv`, `python benchmarks/…` or `python experiments/…`, `bash benchmarks/…` or
`python -m pytest` (after any `VAR=value`, `nice -n N`; `torchrun … -m rlhfv.cli` counts as
`rlhfv`). For each:
- `rlhfv run|validate <recipe> [--stages …] key=value …`: the real CLI parses it; the recipe exists
  and validates with its overrides (so an override naming a missing key fails); `--stages` names
  stages of the recipe. Nothing runs.
- `rlhfv eval|annotate|models …`: the subcommand's own parser accepts the arguments. Nothing runs.
- `python benchmarks/X.py …` (or `experiments/X.py`): the script exists, `--help` exits 0, and its parser accepts the
  quoted arguments (all scripts in one subprocess, so torch is imported once); with `--recipe`,
  that recipe validates with the quoted overrides.
- `bash benchmarks/X.sh`: the script exists and `bash -n` accepts it.
- `python -m pytest <paths>` and inline paths (`recipes/…`, `benchmarks/….png`): the files exist.
A line that looks like a command but is none of these fails the test, so nothing is skipped.

`<run>`-style placeholders stand for the reader's folders. Data files that a user brings (a
recipe's `data/…` or `../shared/data/…`, absent from a fresh clone) are replaced by empty stand-ins
when missing; every other part of the recipe is still checked.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import rlhfv.cli
from rlhfv.config import RecipeError, load_recipe, resolve_target

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "RESULTS.md"
PLACEHOLDER = re.compile(r"<([^<>\n]+)>")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
SETUP = {"python3.11 -m venv .venv", ". .venv/bin/activate", "pip install -e ."}  # the install line
LOOKS_LIKE_A_COMMAND = re.compile(r"^(rlhfv|python[\d.]*|bash|pip|torchrun)\s|(benchmarks|experiments)/\S+\.(py|sh)\b")
SCRIPT_FOLDERS = ("benchmarks/", "experiments/")  # speed benchmarks; the experiments behind the figures
USER_DATA = ("data/", "../shared/data/")
MISSING_FILE = re.compile(r": (?P<key>[\w.\[\]-]+) = '(?P<value>[^']*)': no such file or folder")


@dataclass
class Command:
    text: str  # as quoted on the page
    kind: str  # rlhfv | script | bash | pytest | path
    args: list[str]  # after the program (placeholders replaced)


def code_snippets(markdown: str) -> list[str]:
    """Shell lines of fenced and indented code blocks, and inline code spans elsewhere."""
    snippets, prose, fenced = [], [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            snippets.append(line.strip())
        else:
            prose.append(line)
    snippets += re.findall(r"`([^`\n]+)`", "\n".join(prose))
    return [s for s in snippets if s]


def parse_snippet(snippet: str) -> tuple[list[Command], list[str]]:
    """(commands, parts that look like commands but are not understood)."""
    commands, unknown = [], []
    for part in (p.strip() for p in snippet.split("&&")):
        part = re.split(r"\s+#", part)[0].strip()
        if part in SETUP:
            continue
        words = shlex.split(PLACEHOLDER.sub(lambda m: "PLACEHOLDER-" + re.sub(r"\W+", "-", m[1]), part))
        while words and ENV_ASSIGNMENT.match(words[0]):
            words = words[1:]
        if words[:2] == ["nice", "-n"]:
            words = words[3:]
        if words[:1] == ["torchrun"] and "rlhfv.cli" in words:  # torchrun … -m rlhfv.cli run …
            words = ["rlhfv", *words[words.index("rlhfv.cli") + 1 :]]
        if words[:1] == ["rlhfv"]:
            commands.append(Command(part, "rlhfv", words[1:]))
        elif (
            len(words) > 1 and re.fullmatch(r"python[\d.]*", words[0]) and words[1].startswith(SCRIPT_FOLDERS)
        ):
            commands.append(Command(part, "script", words[1:]))
        elif words[:3] == ["python", "-m", "pytest"]:
            commands.append(Command(part, "pytest", [w for w in words[3:] if not w.startswith("-")]))
        elif len(words) == 2 and words[0] == "bash" and words[1].startswith("benchmarks/"):
            commands.append(Command(part, "bash", words[1:]))
        elif len(words) == 1 and "/" in words[0] and (ROOT / words[0].split("/")[0]).exists():
            commands.append(Command(part, "path", words))  # a repository file named in the text
        elif LOOKS_LIKE_A_COMMAND.search(part):
            unknown.append(part)
    return commands, unknown


def page_commands(markdown: str) -> tuple[list[Command], list[str]]:
    commands, unknown = [], []
    for snippet in code_snippets(markdown):
        found, odd = parse_snippet(snippet)
        commands += found
        unknown += odd
    return commands, unknown


class Parsed(Exception):
    """Raised by a subcommand's parser once it has accepted its arguments: nothing runs after it."""


def load_with_stand_ins(recipe: str, overrides: list[str], stand_ins: Path):
    """load_recipe, with empty files standing in for user data files a fresh clone lacks.

    The same missing path always gets the same stand-in, so the train/held-out overlap check
    still sees two nodes that read one file as one file."""
    extra: list[str] = []
    while True:
        try:
            return load_recipe(recipe, overrides + extra)
        except RecipeError as e:
            missing = MISSING_FILE.search(str(e))
            if not missing or not missing["value"].startswith(USER_DATA) or len(extra) > 20:
                raise
            stand_in = stand_ins / re.sub(r"[^\w.-]+", "_", missing["value"])
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.touch()
            extra.append(f"{missing['key']}={stand_in}")


def check_rlhfv(command: Command, stand_ins: Path, monkeypatch, capsys) -> str | None:
    """None if `rlhfv …` parses (and its recipe validates); else what is wrong."""
    real_parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real_parse_args(self, args, namespace)
        raise Parsed

    def no_op_pipeline(target: str, *where: str):
        resolve_target(target, *where)  # the pipeline must still exist
        return lambda stage: {}

    with monkeypatch.context() as m:
        m.chdir(ROOT)  # recipes name files relative to the repository root
        m.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)  # delegated subcommands
        m.setattr(
            rlhfv.cli, "load_recipe", lambda path, overrides: load_with_stand_ins(path, overrides, stand_ins)
        )
        m.setattr(rlhfv.cli, "resolve_target", no_op_pipeline)
        m.setattr(rlhfv.cli, "missing_input", lambda *args: None)  # no-op stages write no final/ for the next
        try:
            code = rlhfv.cli.main(command.args)
        except Parsed:
            code = 0
        except SystemExit as e:
            code = e.code
        except Exception as e:  # noqa: BLE001 - report any failure against the command
            return f"{type(e).__name__}: {e}"
        finally:
            captured = capsys.readouterr()
    return None if code in (0, None) else f"exit {code}: {captured.err.strip()[-600:]}"


SCRIPT_DRIVER = r"""
import argparse, contextlib, io, json, runpy, sys

class Parsed(Exception):
    pass

real = argparse.ArgumentParser.parse_args

def parse_then_stop(self, args=None, namespace=None):
    real(self, args, namespace)
    raise Parsed

argparse.ArgumentParser.parse_args = parse_then_stop
report = {}
for text, path, argv in json.loads(sys.argv[1]):
    for label, args in (("--help", ["--help"]), ("the quoted arguments", argv)):
        sys.argv, out = [path, *args], io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                runpy.run_path(path, run_name="__main__")
            problem = "ran without parsing its arguments"
        except Parsed:
            problem = "--help did not exit" if label == "--help" else None
        except SystemExit as e:
            ok = "--help" in args and e.code in (0, None)
            problem = None if ok else f"exit {e.code}: {out.getvalue().strip()[-600:]}"
        except Exception as e:
            problem = f"{type(e).__name__}: {e}"
        if problem:
            report[text] = f"{label}: {problem}"
print(json.dumps(report))
"""


def check_scripts(commands: list[Command]) -> dict[str, str]:
    """Problems by command, for every `python benchmarks/X.py …` or `experiments/…`, checked in one subprocess."""
    problems, runnable = {}, []
    for c in commands:
        if not (ROOT / c.args[0]).is_file():
            problems[c.text] = f"no such script: {c.args[0]}"
        else:
            runnable.append([c.text, c.args[0], c.args[1:]])
    if runnable:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT_DRIVER, json.dumps(runnable)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        problems.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return problems


def check_page(markdown: str, tmp_path: Path, monkeypatch, capsys) -> tuple[list[Command], dict[str, str]]:
    commands, unknown = page_commands(markdown)
    problems = {part: "looks like a command but is not one this test understands" for part in unknown}
    for c in commands:
        if c.kind == "rlhfv":
            problem = check_rlhfv(c, tmp_path / "stand_ins", monkeypatch, capsys)
        elif c.kind == "bash":
            script = ROOT / c.args[0]
            if not script.is_file():
                problem = f"no such script: {c.args[0]}"
            else:
                problem = subprocess.run(
                    ["bash", "-n", str(script)], capture_output=True, text=True
                ).stderr.strip()
        elif c.kind in ("pytest", "path"):
            missing = [a for a in c.args if not (ROOT / a).exists()]
            problem = f"no such file: {', '.join(missing)}" if missing else None
        else:
            continue
        if problem:
            problems[c.text] = problem
    for c in commands:  # a script that takes a recipe and overrides: they must validate too
        if c.kind == "script" and "--recipe" in c.args[:-1]:
            recipe = c.args[c.args.index("--recipe") + 1]
            overrides = [a for a in c.args if "=" in a and not a.startswith("-")]
            try:
                with monkeypatch.context() as m:
                    m.chdir(ROOT)
                    load_with_stand_ins(recipe, overrides, tmp_path / "stand_ins")
            except RecipeError as e:
                problems[c.text] = str(e)
    problems.update(check_scripts([c for c in commands if c.kind == "script"]))
    return commands, problems


def test_every_command_on_the_results_page_parses(tmp_path, monkeypatch, capsys):
    commands, problems = check_page(PAGE.read_text(), tmp_path, monkeypatch, capsys)
    kinds = {c.kind for c in commands}
    assert {"rlhfv", "script", "bash", "pytest", "path"} <= kinds, kinds  # the extraction found them all
    assert sum(c.kind == "rlhfv" and c.args[:1] in (["run"], ["validate"]) for c in commands) >= 8
    assert not problems, "\n".join(f"{cmd}\n    -> {why}" for cmd, why in problems.items())


BROKEN = """
```bash
rlhfv run recipes/no_such_recipe.yaml
rlhfv validate recipes/sft_shapes.yaml stesp=5
rlhfv run recipes/grpo_shapes.yaml --stages no_such_stage
python benchmarks/no_such_script.py --size 3
python experiments/paired_accuracy.py --no-such-flag 1
python experiments/grlhfv_n_scaling.py --recipe recipes/grlhfv_shapes.yaml --ns 2 stages.policy_rl.stpes=3
rlhfv eval grm --model tiny --no-such-flag
rlhfv no_such_subcommand
```
    bash benchmarks/no_such.sh
The plot `benchmarks/no_such_plot.png`; and `torchrun --nproc_per_node 8 train.py` is no known kind.
"""


def test_the_check_fails_on_each_kind_of_broken_command(tmp_path, monkeypatch, capsys):
    commands, problems = check_page(BROKEN, tmp_path, monkeypatch, capsys)
    assert len(commands) == 10
    expected = {
        "rlhfv run recipes/no_such_recipe.yaml": "recipe not found",
        "rlhfv validate recipes/sft_shapes.yaml stesp=5": "unknown key 'stesp'",
        "rlhfv run recipes/grpo_shapes.yaml --stages no_such_stage": "no_such_stage",
        "python benchmarks/no_such_script.py --size 3": "no such script",
        "python experiments/paired_accuracy.py --no-such-flag 1": "the quoted arguments: exit 2",
        "python experiments/grlhfv_n_scaling.py --recipe recipes/grlhfv_shapes.yaml --ns 2 stages.policy_rl.stpes=3": "stpes",
        "rlhfv eval grm --model tiny --no-such-flag": "exit 2",
        "rlhfv no_such_subcommand": "exit 2",
        "bash benchmarks/no_such.sh": "no such script",
        "benchmarks/no_such_plot.png": "no such file",
        "torchrun --nproc_per_node 8 train.py": "not one this test understands",
    }
    assert set(problems) == set(expected), sorted(problems)
    for command, why in expected.items():
        assert why in problems[command], (command, problems[command])


def test_commands_are_found_in_fences_indented_blocks_chains_and_inline_code():
    text = (
        "Run `rlhfv ls`.\n\n    OMP_NUM_THREADS=1 rlhfv run recipes/a.yaml run.dir=<new dir>\n\n"
        "    torchrun --nproc_per_node 8 -m rlhfv.cli run recipes/c.yaml\n\n"
        "```bash\npython3.11 -m venv .venv && . .venv/bin/activate && rlhfv validate recipes/b.yaml  # check\n```\n"
    )
    commands, unknown = page_commands(text)
    assert not unknown
    assert [c.args for c in commands] == [
        ["run", "recipes/a.yaml", "run.dir=PLACEHOLDER-new-dir"],
        ["run", "recipes/c.yaml"],
        ["validate", "recipes/b.yaml"],
        ["ls"],
    ]


@pytest.mark.parametrize("recipe", ["reasongrm_hh.yaml", "spct_rl_hh.yaml"])
def test_user_data_stand_ins_keep_the_recipe_checked(recipe, tmp_path, monkeypatch):
    """Stand-ins replace only missing data files: a misspelled key in the same recipe still fails."""
    monkeypatch.chdir(ROOT)
    load_with_stand_ins(f"recipes/{recipe}", [], tmp_path)
    typo = "stpes=3" if recipe.startswith("spct") else "stages.zero_rl.stpes=3"
    with pytest.raises(RecipeError, match=r"unknown key '(stages\.zero_rl\.)?stpes'; did you mean 'steps'"):
        load_with_stand_ins(f"recipes/{recipe}", [typo], tmp_path)
