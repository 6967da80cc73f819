"""Peak memory of reading image rows: `HubExamples` (datasets, images decoded per row) against
`JsonlExamples` (every image decoded when the file is read), from 100 to 10,000 rows.

Each measurement is a fresh process that opens the data set and reads what 4 SFT steps of batch
16 read (64 random rows), then reports its peak resident memory (VmHWM). The images are
128×128 random-noise PNGs (about 49 KB each, so PNG cannot shrink them), the same pixels in both
formats: a parquet file for HubExamples (converted into datasets' Arrow cache inside the measured
process, as a first run does) and a JSONL file with PNG paths for JsonlExamples.

    python benchmarks/lazy_data_memory.py --rows 100 1000 10000 --out results/hub_data.md

Flat means: the peak at the largest size is within 10% of the peak at the smallest.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = 128  # pixels per side
READ = 64  # rows read after opening: 4 steps × batch 16

MEASURE = """
import json, random, sys, threading, time
peak = {"anon": 0}
def status():
    return {l.split(":")[0]: int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith(("VmHWM", "RssAnon"))}
def watch():  # anonymous memory (not file pages mapped from the Arrow cache), sampled every 10 ms
    while True:
        peak["anon"] = max(peak["anon"], status()["RssAnon"])
        time.sleep(0.01)
threading.Thread(target=watch, daemon=True).start()
kind, path = sys.argv[1], sys.argv[2]
if kind == "hub":
    from rlhfv.data.hub_data import HubExamples
    data = HubExamples(path)
else:
    from rlhfv.data.jsonl import JsonlExamples
    data = JsonlExamples(path)
rng = random.Random(0)
pixels = sum(sum(im.size[0] * im.size[1] for im in data[rng.randrange(len(data))].prompt.images) for _ in range(READ))
time.sleep(0.05)
# VmHWM, not ru_maxrss: a forked child inherits its parent's ru_maxrss across exec
print(json.dumps({"rows": len(data), "pixels": pixels, "peak_mib": status()["VmHWM"], "anon_mib": peak["anon"]}))
""".replace("READ", str(READ))


def write_rows(folder: Path, n: int) -> tuple[Path, Path]:
    """n rows of (noise image, question, answer) as parquet and as JSONL + PNG files."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    rows: dict[str, list] = {"image": [], "question": [], "answer": []}
    with (folder / "rows.jsonl").open("w") as jsonl:
        for i in range(n):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(buffer, format="PNG")
            (folder / "img" / f"{i}.png").write_bytes(buffer.getvalue())
            rows["image"].append({"bytes": buffer.getvalue(), "path": None})
            rows["question"].append(f"Question {i}?")
            rows["answer"].append(f"answer {i}")
            jsonl.write(
                json.dumps({"prompt": f"Question {i}?", "answer": f"answer {i}", "images": [f"img/{i}.png"]})
                + "\n"
            )
    features = datasets.Features(
        {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
    )
    datasets.Dataset.from_dict(rows, features=features).to_parquet(
        str(folder / "rows.parquet"), batch_size=100
    )  # row groups of 100, as the Hub writes image sets
    return folder / "rows.parquet", folder / "rows.jsonl"


def measure(kind: str, path: Path, cache: Path) -> dict:
    env = {"HF_DATASETS_CACHE": str(cache), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, kind, str(path)], capture_output=True, text=True, env=env
    )
    if done.returncode:
        raise RuntimeError(f"{kind} on {path} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--out", type=Path, default=None, help="write the table to this Markdown file")
    args = parser.parse_args()
    table = []
    with tempfile.TemporaryDirectory(prefix="lazy-data-") as tmp:
        for n in args.rows:
            parquet, jsonl = write_rows(Path(tmp) / f"n{n}", n)
            cache = Path(tmp) / f"cache{n}"
            first_open = measure("hub", parquet, cache)  # converts the parquet into the Arrow cache
            hub = measure("hub", parquet, cache)  # every later run: the cache, memory-mapped
            eager = measure("jsonl", jsonl, cache)
            table.append((n, parquet.stat().st_size / 2**20, first_open, hub, eager))
            print(f"{n:>6} rows: first open {first_open}, cached {hub}, jsonl {eager}", flush=True)
    base = table[0]
    columns = [("first open", 2), ("cached", 3), ("JsonlExamples", 4)]
    lines = [
        "| rows | parquet MiB | "
        + " | ".join(f"{c}: peak RSS | ratio | peak anon | ratio" for c, _ in columns)
        + " |",
        "| ---: | ---: |" + " ---: | ---: | ---: | ---: |" * len(columns),
    ]
    for row in table:
        cells = []
        for _, col in columns:
            for key in ("peak_mib", "anon_mib"):
                cells += [f"{row[col][key]:.0f}", f"{row[col][key] / base[col][key]:.2f}"]
        lines.append(f"| {row[0]} | {row[1]:.1f} | " + " | ".join(cells) + " |")
    lines.append("")
    for label, col in columns[:2]:
        for key, what in (("peak_mib", "peak RSS"), ("anon_mib", "peak anonymous memory")):
            ratio = table[-1][col][key] / base[col][key]
            verdict = "flat, within 10%" if ratio <= 1.10 else "NOT within 10%"
            lines.append(
                f"HubExamples {label}: {what} ×{ratio:.2f} from {base[0]} to {table[-1][0]} rows ({verdict})."
            )
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
