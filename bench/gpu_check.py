"""The GPU check: ropescale.torch on a CUDA device, in one table.

    python bench/gpu_check.py            # on a CUDA machine; falls back to the CPU without one
    python bench/gpu_check.py --quick    # smaller sizes and fewer rounds (what CI runs)

Rows, each measured in this one run:

* logits: a tiny Llama (built from a config, no download) with YaRN written
  into its config natively, against the same weights with the default rope
  patched to YaRN by ``ropescale.hf.patch``: max |difference| of the logits
  (transformers forms angles in float32, ropescale exactly: they differ by
  float32 rounding);
* tables: ``RotaryEmbedding`` cos/sin (float32, on the device) at positions
  up to the rope's context and beyond, against float64 angles on the CPU, in
  units of float32's ulp at 1 (their rounding: <= 0.5 is correctly rounded);
* timing of one rotary step (the tables for ``position_ids`` and q, k
  rotated) at ``(B, S, H, D)``: transformers' eager ``LlamaRotaryEmbedding``
  + ``apply_rotary_pos_emb``, the same compiled, and ropescale's
  ``RotaryEmbedding`` + ``apply_rotary`` compiled; liger-kernel's and
  flashinfer's rope when installed.  Medians of interleaved rounds, with the
  device synchronized around each call; ratios against transformers' eager.

Needs torch and transformers (the hf extra).  Record the machine with the
output (``nvidia-smi -L``, ``lscpu``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fns, device, rounds):
    """Median seconds per call of each function, timed one call of each per round, in turn."""
    times = {name: [] for name in fns}
    for name, fn in fns.items():  # warm-up (and compilation)
        fn()
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def _tiny_llama(rope_parameters, device):
    import torch
    import transformers

    cfg = transformers.LlamaConfig(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                                   intermediate_size=256, vocab_size=128, max_position_embeddings=1024,
                                   rope_parameters=dict(rope_parameters))
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).to(device).eval()


def check_logits(device, seq):
    import torch

    import ropescale.hf

    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024, "rope_theta": 10000.0}
    base = _tiny_llama({"rope_type": "default", "rope_theta": 10000.0}, device)
    native = _tiny_llama(yarn, device)
    native.load_state_dict(base.state_dict())
    ropescale.hf.patch(base, {k: v for k, v in yarn.items() if k != "rope_theta"})
    ids = torch.randint(0, 128, (1, seq), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        diff = (base(ids).logits - native(ids).logits).abs().max().item()
    return diff


def check_tables(device):
    import torch

    import ropescale
    import ropescale.torch as rt

    rope = ropescale.Rope(128, 500000.0, max_position_embeddings=8192).extend(32768, "yarn")
    emb = rt.RotaryEmbedding(rope, layout="half").to(device)
    ids = torch.tensor([[0, 1, 4095, 8191, 8192, 32767, 100000, 1 << 20]], device=device)
    cos, sin = emb(torch.zeros(1, device=device), ids)
    pos = ids.cpu().numpy().astype(np.float64)[..., None]
    ang = pos * rope.inv_freq
    want_c, want_s = np.cos(ang) * rope.attention_factor, np.sin(ang) * rope.attention_factor
    ulp = float(np.finfo(np.float32).eps)
    err = max(np.abs(cos.cpu().double().numpy() - want_c).max(), np.abs(sin.cpu().double().numpy() - want_s).max())
    return err / ulp


def time_rotary(device, shape, rounds):
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    import ropescale
    import ropescale.torch as rt

    b, s, h, d = shape
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    params = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096, "rope_theta": 10000.0}
    cfg = LlamaConfig(hidden_size=h * d, num_attention_heads=h, max_position_embeddings=16384, rope_parameters=params)
    hf_emb = LlamaRotaryEmbedding(cfg).to(device)
    ours = rt.RotaryEmbedding(ropescale.Rope.from_hf(cfg)).to(device)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, h, s, d, generator=g).to(device, dtype)
    k = torch.randn(b, h, s, d, generator=g).to(device, dtype)
    ids = torch.arange(s, device=device)[None].expand(b, s)

    def hf_step(q, k, ids):
        cos, sin = hf_emb(q, ids)
        return apply_rotary_pos_emb(q, k, cos, sin)

    def ours_step(q, k, ids):
        cos, sin = ours(q, ids)
        c, s_ = cos[:, None], sin[:, None]
        return rt.apply_rotary(q, c, s_, layout="full"), rt.apply_rotary(k, c, s_, layout="full")

    hf_compiled = torch.compile(hf_step, fullgraph=True)
    ours_compiled = torch.compile(ours_step, fullgraph=True)
    fns = {"transformers eager": lambda: hf_step(q, k, ids),
           "transformers compiled": lambda: hf_compiled(q, k, ids),
           "ropescale compiled": lambda: ours_compiled(q, k, ids)}
    try:  # optional peers
        from liger_kernel.transformers.rope import liger_rotary_pos_emb

        def liger():
            cos, sin = hf_emb(q, ids)
            return liger_rotary_pos_emb(q, k, cos, sin)
        if device.type == "cuda":
            fns["liger-kernel rope"] = liger
    except ImportError:
        pass
    try:
        import flashinfer  # noqa: F401
        if device.type == "cuda":
            qs, ks = q.transpose(1, 2).reshape(b * s, h * d), k.transpose(1, 2).reshape(b * s, h * d)
            pos = ids.reshape(-1).to(torch.int32)
            fns["flashinfer rope"] = lambda: flashinfer.apply_rope_pos_ids(qs, ks, pos, rotary_dim=d)
    except ImportError:
        pass
    return _time(fns, device, rounds), dtype


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few rounds (CI)")
    args = ap.parse_args(argv)
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"gpu_check: needs torch and transformers (pip install \".[hf]\" in a ropescale clone): {e}",
              file=sys.stderr)
        return 2
    if torch.cuda.is_available():
        device = torch.device("cuda")
        where = torch.cuda.get_device_name(0)
    else:
        device = torch.device("cpu")
        where = "CPU (no CUDA device: the fallback, so this script is known to run)"
    shape = (1, 256, 4, 64) if args.quick else (4, 4096, 32, 128)
    rounds = 5 if args.quick else 50
    rows = []
    rows.append(("logits: patched YaRN vs transformers' YaRN, max abs diff", f"{check_logits(device, 64 if args.quick else 2048):.2e}"))
    rows.append(("tables: RotaryEmbedding vs float64 angles, max error (float32 ulps)", f"{check_tables(device):.3f}"))
    times, dtype = time_rotary(device, shape, rounds)
    ref = times["transformers eager"]
    for name, t in times.items():
        rows.append((f"time {name}, {shape} {str(dtype).replace('torch.', '')}",
                     f"{t * 1e6:.1f} us ({t / ref:.2f}x eager)"))
    print(f"ropescale gpu_check on {where}, torch {torch.__version__}")
    w = max(len(r[0]) for r in rows)
    print(f"| {'check'.ljust(w)} | result |")
    print(f"| {'-' * w} | --- |")
    for name, value in rows:
        print(f"| {name.ljust(w)} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
