"""StreamingLLM-style attention sinks + a sliding window on a rotated KV cache.

The cache holds ``sinks`` first tokens forever and a window of the most recent
ones.  Positions are positions *in the cache* (as StreamingLLM assigns them), so
when old window tokens are evicted the remaining keys move down by the number
evicted: ``ropescale.rerotate`` turns them by the exact delta angle, in place,
instead of keeping unrotated keys around or re-rotating through float32 angles.

    python examples/streaming_sink.py [--tokens 20000] [--dtype float16]

At the end the attention scores of a query against the cache are compared with
scores against keys rotated from scratch at their final cache positions.
"""
import argparse
import sys

import numpy as np

import ropescale


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=20000, help="tokens streamed through the cache")
    p.add_argument("--sinks", type=int, default=4, help="attention-sink tokens kept forever")
    p.add_argument("--window", type=int, default=1020, help="recent tokens kept")
    p.add_argument("--evict", type=int, default=256, help="window tokens evicted at once when full")
    p.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    args = p.parse_args(argv)

    heads, dim = 4, 128
    rope = ropescale.Rope(dim, 500000.0)
    rng = np.random.default_rng(0)
    cap = args.sinks + args.window
    cache = np.zeros((cap, heads, dim), dtype=args.dtype)   # rotated keys, (slot, head, dim)
    raw = np.zeros((cap, heads, dim), dtype=np.float64)     # the same keys unrotated, for the check
    n = 0            # slots in use; slot i holds the key at cache position i
    moves = 0
    for _ in range(args.tokens):
        if n == cap:
            # Evict the oldest window tokens; the survivors move down by `ev`
            # slots, and their keys are turned by the exact delta in place.
            ev = args.evict
            keep = slice(args.sinks + ev, cap)
            old_pos = np.arange(args.sinks + ev, cap)[:, None]
            survivors = cache[keep]
            ropescale.rerotate(survivors, old_pos, old_pos - ev, rope.inv_freq, out=survivors)
            cache[args.sinks:cap - ev] = survivors     # NumPy copies overlapping slices safely
            raw[args.sinks:cap - ev] = raw[keep]
            n -= ev
            moves += 1
        k = rng.standard_normal((heads, dim))
        raw[n] = k
        cache[n] = rope.apply(k.astype(args.dtype), np.array(n))       # rotated at its cache position
        n += 1

    q = rope.apply(rng.standard_normal((heads, dim)), np.array(n))        # the next query
    scratch = rope.apply(raw[:n], np.arange(n)[:, None])                  # float64 keys from scratch
    scores = np.einsum("hd,shd->hs", q, cache[:n].astype(np.float64)) / np.sqrt(dim)
    want = np.einsum("hd,shd->hs", q, scratch) / np.sqrt(dim)
    err = np.abs(scores - want).max()
    # One rounding of each stored key per move and no angle error: a few
    # units of the dtype's rounding of a score of size ~|q||k|/sqrt(dim) ~ 11.
    budget = 4 * np.finfo(args.dtype).eps * 11
    print(f"{args.tokens} tokens, {moves} evictions of {args.evict}, cache {cap} slots ({args.sinks} sinks), {args.dtype}")
    print(f"max |scores - scores from scratch| = {err:.3g} (budget {budget:.3g})")
    return 0 if err <= budget else 1


if __name__ == "__main__":
    sys.exit(main())
