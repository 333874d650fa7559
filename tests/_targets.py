"""What the subprocess fuzz workers (_fuzz_worker.py, _hostile_worker.py) share:
the valid/invalid tally per target and the loop that runs each target's
Hypothesis test and prints ``<PREFIX> <target> <cases> valid=<n> invalid=<n>``,
then ``<PREFIX>-TOTAL <cases>`` (the lines tests/test_fuzz.py and
tests/test_hostile.py read)."""
import argparse
import traceback

from hypothesis import HealthCheck, given, seed, settings

COUNTS = {}


def tally(target, valid):
    c = COUNTS.setdefault(target, [0, 0])
    c[0 if valid else 1] += 1


def run(targets, prefix, description, argv=None, *, examples, seed_value, skip=None):
    """Run ``targets`` ((name, strategy, body) rows); 1 if any failed.  ``skip(name)`` returns a
    reason to skip that target, or None."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--examples", type=int, default=examples, help="max_examples per target")
    ap.add_argument("--seed", type=int, default=seed_value)
    ap.add_argument("--only", default=None, help="run one target")
    args = ap.parse_args(argv)
    failed = False
    for name, strategy, body in targets:
        if args.only and name != args.only:
            continue
        why = skip(name) if skip is not None else None
        if why is not None:
            print(f"{prefix}-SKIP {name}: {why}", flush=True)
            print(f"{prefix} {name} 0 valid=0 invalid=0", flush=True)
            continue
        test = seed(args.seed)(settings(max_examples=args.examples, deadline=None, database=None,
                                        suppress_health_check=list(HealthCheck), print_blob=False)(
            given(strategy)(body)))
        try:
            test()
        except Exception:
            failed = True
            print(f"{prefix}-FAIL {name}", flush=True)
            traceback.print_exc()
        v, i = COUNTS.get(name, [0, 0])
        print(f"{prefix} {name} {v + i} valid={v} invalid={i}", flush=True)
    total = sum(v + i for v, i in COUNTS.values())
    print(f"{prefix}-TOTAL {total}", flush=True)
    return 1 if failed else 0
