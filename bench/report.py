"""Regenerate the published benchmark numbers: bench/RESULTS.md, bench/results.json and README's table.

    python bench/report.py                       # ~8 minutes on 2 cores
    python bench/report.py --old ../ropescale-0.1   # also the C core against an older tree's

Runs, each in a subprocess of its own and one after another (so they do not
share the cores): ``bench.py --json``, ``bench_torch.py``, ``bench_rerotate.py``
and, with ``--old``, ``compare_builds.py OLD .``.  RESULTS.md is their outputs
in that order, with a note on reading a shared machine; README.md's table
between the ``<!-- bench-table -->`` markers is rewritten from the JSON, and
its machine line from the same run.  The tables are never edited by hand, so
each is one run's; a rerun of single rows, when one reads off, is added as
prose under its table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

READING = """## How to read this on a shared machine

The machine has 2 logical CPUs and is shared: absolute milliseconds vary by up to 2× between
runs, so compare ratios within a row, whose contenders ran in the same seconds (round-robin
batches in a fresh order every round; the ×plain column and the torch-path table from single
calls shuffled one by one, which read two identical calls within 1–2 %).  Even ratios of the
batch columns move by ±10–20 % between runs, most of all for 2-thread rows and decode rows,
whose working set (x and out, 2 MiB) is the size of one core's L2.  Decode rows time calls
back to back; after an idle gap a pool worker wakes later and the caller does more of the
call itself (`csrc/threads.c`).  Rows with compiled peers had XLA's and inductor's thread
pools alive in the same process.
"""


def _run(args: List[str], title: str) -> str:
    print(f"report: {title} ...", file=sys.stderr, flush=True)
    env = dict(os.environ)
    src = os.path.join(ROOT, "src")
    if os.path.isdir(src):
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"report: {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout.strip()


def _fmt(v: Optional[float]) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _ratio(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def readme_table(rows: List[Dict[str, Any]]) -> str:
    """README's table: the columns a reader compares, from bench.py's JSON rows."""
    head = ("| case | shape, dtype | thr | ms | ×copy floor | ×`x.copy()` | × faster than NumPy ref "
            "| × faster than torch | × faster than torch.compile | × faster than jax.jit | ×plain positions "
            "| peak RSS growth MB (output) |")
    lines = [head, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        rss = "–" if r.get("rss_mb") is None else f"{r['rss_mb']:.1f} ({r['out_mb']:.0f})"
        lines.append("| " + " | ".join([
            r["case"], r["shape"], str(r["threads"]), _fmt(r["ropescale_ms"]), _ratio(r.get("x_floor")),
            _ratio(r.get("x_copy")), _ratio(r.get("x_numpy")), _ratio(r.get("x_torch")),
            _ratio(r.get("x_compile")), _ratio(r.get("x_jax")), _ratio(r.get("x_plain")), rss]) + " |")
    return "\n".join(lines)


def machine_line(info: Dict[str, Any], load: Optional[float]) -> str:
    versions = ", ".join(f"{name} {info[key]}" for key, name in (("numpy", "NumPy"), ("torch", "torch"),
                                                                   ("jax", "jax"), ("ml_dtypes", "ml_dtypes"))
                         if info.get(key))
    text = (f"Machine: {info['cpus']} logical CPUs ({info['cpu']}), Python {info['python']}, {versions}, "
            f"ropescale {info['ropescale']} with {info['ropescale_threads']} threads "
            f"(`_core.simd_name()` = {info['simd']})")
    return text + (f", load average {load:.1f} at the start of the run." if load is not None else ".")


def update_readme(table: str, machine: str) -> None:
    path = os.path.join(ROOT, "README.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    pattern = re.compile(r"(<!-- bench-table -->\n).*?(\n<!-- /bench-table -->)", re.S)
    if not pattern.search(text):
        sys.exit("report: README.md has no <!-- bench-table --> ... <!-- /bench-table --> markers")
    text = pattern.sub(lambda m: m.group(1) + machine + "\n\n" + table + m.group(2), text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", metavar="TREE", help="also compare the C core with this older checkout's")
    p.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    args = p.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    json_path = os.path.join(HERE, "results.json")
    parts = [_run(["bench/bench.py", "--json", json_path], "bench.py (every case)")]
    parts.append("## Torch-tensor path overhead at decode shapes (bench/bench_torch.py)\n\n"
                 + _run(["bench/bench_torch.py"], "bench_torch.py"))
    parts.append("## In-place rerotate (bench/bench_rerotate.py)\n\n" + _run(["bench/bench_rerotate.py"],
                                                                          "bench_rerotate.py"))
    if args.old:
        parts.append("## The C core against an older build (bench/compare_builds.py)\n\n"
                     f"Both `_core` extensions loaded in one process, the raw kernels called alternately "
                     f"(ABBA); old = `{os.path.basename(os.path.abspath(args.old))}`, new = this tree.\n\n"
                     + _run(["bench/compare_builds.py", args.old, "."], "compare_builds.py"))
    parts.append(READING)
    with open(os.path.join(HERE, "RESULTS.md"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(parts).rstrip() + "\n")
    if not args.no_readme:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
        update_readme(readme_table(data["rows"]), machine_line(data["machine"], load))
    print("report: wrote bench/RESULTS.md, bench/results.json" + ("" if args.no_readme else ", README.md"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
