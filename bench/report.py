"""Regenerate the published benchmark numbers: this machine's section of bench/RESULTS.md,
bench/results/<machine>.json and README's table.

    python bench/report.py                       # ~10 minutes on 2 cores
    python bench/report.py --old ../ropescale-0.1   # also the C core against an older tree's

Runs, each in a subprocess of its own and one after another (so they do not
share the cores): ``bench.py --json``, ``bench/qk_probe.c`` (built with the C
compiler in ``CC``, else ``cc``), ``bench_torch.py``, ``bench_rerotate.py``
and, with ``--old``, ``compare_builds.py OLD .``; a paragraph per row that
misses its target, from the run's own numbers.  RESULTS.md keeps one
section per machine measured (vendor, model, family/model, caches, the SIMD
level the kernels used): a run replaces its own machine's section with its
outputs in that order and leaves the others; a table at the top gives every
target row on every machine, so a row that passes on one and misses on
another shows as such.  README.md's table between the ``<!-- bench-table -->``
markers is rewritten from this run's JSON, with its machine line.  The
tables are never edited by hand, so each is one run's; a rerun of single
rows, when one reads off, is added as prose under its table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
import harness  # noqa: E402  (beside this file: the CPU description and the thread column)

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
            "| ×two calls | copy floor ÷ two calls | peak RSS growth MB (output) |")
    lines = [head, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        rss = "–" if r.get("rss_mb") is None else f"{r['rss_mb']:.1f} ({r['out_mb']:.0f})"
        lines.append("| " + " | ".join([
            r["case"], r["shape"], harness.threads_text(r), _fmt(r["ropescale_ms"]), _ratio(r.get("x_floor")),
            _ratio(r.get("x_copy")), _ratio(r.get("x_numpy")), _ratio(r.get("x_torch")),
            _ratio(r.get("x_compile")), _ratio(r.get("x_jax")), _ratio(r.get("x_plain")), _ratio(r.get("x_two")),
            _ratio(r.get("x_two_floor")), rss]) + " |")
    return "\n".join(lines)


def qk_probe() -> str:
    """bench/qk_probe.c built against csrc/ and run on the decode q+k step: where the time of one pass
    and of two calls goes (kernel calls only, no Python), on one thread and on all.  A line saying why
    when no C compiler is found."""
    import glob
    import shutil
    import tempfile
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return "bench/qk_probe.c not run: no C compiler found (set CC)."
    print("report: qk_probe.c ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "qk_probe")
        build = subprocess.run([cc, "-O3", "-std=c99", "-ffp-contract=off", "-fno-trapping-math", "-I", "csrc",
                                "bench/qk_probe.c", *sorted(glob.glob(os.path.join(ROOT, "csrc", "*.c"))), "-lm",
                                "-pthread", "-o", exe], cwd=ROOT, capture_output=True, text=True)
        if build.returncode != 0:
            return f"bench/qk_probe.c not run: `{cc}` failed:\n\n```\n{build.stderr[-1500:]}\n```"
        parts = []
        for k_heads, threads, split in ((32, 1, 2), (32, 2, 1), (8, 1, 2), (8, 2, 1)):
            done = subprocess.run([exe, str(k_heads), str(threads), "0", str(split)], capture_output=True,
                                  text=True)
            parts.append(done.stdout.strip() if done.returncode == 0 else f"(exit {done.returncode})")
    return "\n\n".join(parts)


def miss_notes(rows: List[Dict[str, Any]]) -> str:
    """A sentence per row of this run that misses its target, from the run's own numbers; for the
    q+k rows with the copy floor's bound (the least ×two calls memory traffic allows)."""
    lines = []
    for r in rows:
        if not (r.get("status") or "").startswith("MISS"):
            continue
        if r.get("x_two") is not None and "×two calls" in (r.get("target") or ""):
            bound = r.get("x_two_floor")
            text = (f"one pass is {_ratio(r['x_two'])}× two calls against a target of {r['target']}. In the same "
                    f"shuffled calls the `np.copyto` of q and k into their outputs (one thread) is {_ratio(bound)}× "
                    f"two calls, and one pass is {_ratio(r.get('x_floor_single'))}× that copy.")
            if bound:
                need = 0.6 / bound
                text += f" Reaching 0.6 takes one pass at {need:.2f}× the copy"
                text += (f", faster than NumPy copies the same bytes on one thread (the pass ran on "
                         f"{harness.threads_text(r)} thread(s)); `bench/qk_probe.c` below sets the pass against "
                         "`memcpy` of q and k split over the pool's threads as well."
                         if need < 1 else ".")
        else:
            text = f"{r['status'][len('MISS ('):].rstrip(')')} (target {r['target']}), on {harness.threads_text(r)} " \
                   f"thread(s)."
        lines.append(f"- **{r['case']}** ({r['shape']}): {text}")
    if not lines:
        return "Every row with a target passes on this machine in this run."
    return "\n".join(lines)


def machine_key(info: Dict[str, Any]) -> str:
    """A file-name-safe key per machine kind: vendor, family/model, SIMD level."""
    m = re.search(r"family (\d+), model (\d+)", info.get("cpu", ""))
    fam = f"f{m.group(1)}-m{m.group(2)}" if m else re.sub(r"[^A-Za-z0-9]+", "-", info.get("cpu", "cpu"))[:40]
    return f"{info.get('vendor', 'unknown')}-{fam}-{info.get('simd', '')}".strip("-")


def machine_title(info: Dict[str, Any]) -> str:
    return harness.cpu_text(info) + f"; {info['cpus']} logical CPUs"


def _targets(row: Dict[str, Any]) -> List[str]:
    """The metrics a row is judged on (from its target text, which every results file has)."""
    words = {"×floor": "x_floor", "×x.copy()": "x_copy", "×ip-floor": "x_ipfloor", "×np": "x_numpy",
             "×torch": "x_torch", "×compile": "x_compile", "×jax": "x_jax", "×plain": "x_plain",
             "×two calls": "x_two"}
    return [words[m.group(1)] for m in re.finditer(r"(×[^<>=,]+)(?:<=|>=)", row.get("target") or "")
            if m.group(1) in words]


def targets_table(results: Dict[str, Dict[str, Any]]) -> str:
    """Every row with a target, one column per machine measured: PASS on one and MISS on another shows."""
    keys = sorted(results)
    cases: List[str] = []
    for key in keys:
        for r in results[key]["rows"]:
            if r.get("target") and r["case"] not in cases:
                cases.append(r["case"])
    head = "| case | target | " + " | ".join(results[k]["machine"]["cpu"] + f" ({results[k]['machine'].get('vendor', '?')}, "
                                             f"{results[k]['machine'].get('simd', '?')})" for k in keys) + " |"
    lines = [head, "|" + "---|" * (2 + len(keys))]
    for case in cases:
        target, cells = "", []
        for key in keys:
            row = next((r for r in results[key]["rows"] if r["case"] == case), None)
            if row is None:
                cells.append("not run")
                continue
            target = target or row.get("target", "")
            status = (row.get("status") or "").split(" (")[0]
            vals = [_ratio(row[m]) for m in _targets(row) if row.get(m) is not None]
            bound = ""
            if "x_two" in _targets(row) and row.get("x_two_floor") is not None:
                # the least ×two calls the copy floor allows on this machine
                bound = f" (copy floor alone {_ratio(row['x_two_floor'])})"
            cells.append(f"{' / '.join(vals)} {status}{bound}".strip())
        lines.append(f"| {case} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SECTION = re.compile(r"<!-- machine: (?P<key>[^ ]+) -->\n(?P<body>.*?)<!-- /machine -->\n", re.S)
TOP = """# ropescale benchmarks

One section per machine measured: `python bench/report.py` replaces the section of the
machine it runs on (keyed by vendor, family/model and the SIMD level the kernels use) and
keeps the others; its JSON is `bench/results/<machine>.json`.  The table below gives every
row with a target on every machine measured (the targeted ratios, then PASS or MISS).

"""


def update_results_md(key: str, title: str, body: str, results: Dict[str, Dict[str, Any]]) -> None:
    path = os.path.join(HERE, "RESULTS.md")
    sections: Dict[str, str] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for m in SECTION.finditer(f.read()):
                sections[m.group("key")] = m.group("body")
    sections[key] = f"## {title}\n\n{body.rstrip()}\n\n"
    parts = [TOP, "## Targets on every machine measured\n\n", targets_table(results), "\n\n"]
    for k in sorted(sections):
        parts.append(f"<!-- machine: {k} -->\n{sections[k]}<!-- /machine -->\n")
    parts.append("\n" + READING)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(parts).rstrip() + "\n")


def load_results() -> Dict[str, Dict[str, Any]]:
    results = {}
    folder = os.path.join(HERE, "results")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".json"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                results[name[:-5]] = json.load(f)
    return results


def machine_line(info: Dict[str, Any], load: Optional[float]) -> str:
    versions = ", ".join(f"{name} {info[key]}" for key, name in (("numpy", "NumPy"), ("torch", "torch"),
                                                                   ("jax", "jax"), ("ml_dtypes", "ml_dtypes"))
                         if info.get(key))
    text = (f"Machine: {machine_title(info)}; Python {info['python']}, {versions}, "
            f"ropescale {info['ropescale']} with {info['ropescale_threads']} threads "
            f"(“2→1”: the measured split ran the case on one)")
    return text + (f", load average {load:.1f} at the start of the run" if load is not None else "") + \
        ". Other machines: [bench/RESULTS.md](bench/RESULTS.md)."


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
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    tmp_json = os.path.join(HERE, "results", ".run.json")
    parts = [_run(["bench/bench.py", "--json", tmp_json], "bench.py (every case)")]
    with open(tmp_json, encoding="utf-8") as f:
        data = json.load(f)
    key = machine_key(data["machine"])
    json_path = os.path.join(HERE, "results", key + ".json")
    os.replace(tmp_json, json_path)
    parts.append("### Rows that miss\n\n" + miss_notes(data["rows"]))
    parts.append("### Where a decode q+k step's time goes, in C (bench/qk_probe.c)\n\n"
                 "The kernels called from C on the `q+k decode` shapes, no Python: one pass, two calls, the "
                 "rotation with the step's cos/sin table ready (no angle work), the angle work alone, and "
                 "`memcpy` of q and k on the calling thread and split over the pool as a call splits. "
                 "The thread split is forced (one thread, or all), so both are shown.\n\n" + qk_probe())
    parts.append("### Torch-tensor path overhead at decode shapes (bench/bench_torch.py)\n\n"
                 + _run(["bench/bench_torch.py"], "bench_torch.py"))
    parts.append("### In-place rerotate (bench/bench_rerotate.py)\n\n" + _run(["bench/bench_rerotate.py"],
                                                                           "bench_rerotate.py"))
    if args.old:
        parts.append("### The C core against an older build (bench/compare_builds.py)\n\n"
                     f"Both `_core` extensions loaded in one process, the raw kernels called alternately "
                     f"(ABBA); old = `{os.path.basename(os.path.abspath(args.old))}`, new = this tree.\n\n"
                     + _run(["bench/compare_builds.py", args.old, "."], "compare_builds.py"))
    # the run's own headings one level down, under the machine's
    body = "\n\n".join(re.sub(r"^## ", "### ", part, flags=re.M) for part in parts)
    update_results_md(key, machine_title(data["machine"]), body, load_results())
    if not args.no_readme:
        update_readme(readme_table(data["rows"]), machine_line(data["machine"], load))
    print(f"report: wrote bench/RESULTS.md (section {key}), bench/results/{key}.json"
          + ("" if args.no_readme else ", README.md"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
