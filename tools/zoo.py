#!/usr/bin/env python3
"""Walk every model type of the installed transformers and record its rope, as its own code computes it.

    nice python tools/zoo.py [--out tests/data/zoo_golden.json.gz] [--cache DIR] [--only TYPE,...]
    python tools/zoo.py --only TYPE,... --update   # re-probe those types, replace their rows in --out
    python tools/zoo.py --report        # docs/zoo.md and the README figure, from the committed data

Not needed at test time: ``tests/test_zoo.py`` reads the JSON this writes.  For
each ``model_type`` of ``transformers.CONFIG_MAPPING`` whose modeling file
defines a ``*RotaryEmbedding`` class, and for two variants of its config (the
config class's defaults, and the same with YaRN x4 on its text rope), it:

- builds the config from the class's defaults and serializes it as
  ``save_pretrained`` would (the dict ropescale reads, recorded in the row);
- builds the text model on the ``meta`` device (no weights, nothing computed)
  and runs its forward on five tokens with every ``apply_rotary*`` function of
  the modeling file wrapped, so the row says which decoder layers rotate, with
  which apply function, and which rotary module output (layer type) they use;
- runs the model's own ``*RotaryEmbedding`` on the CPU at positions
  ``PROBE_POSITIONS`` (inv_freq, attention scaling, per layer type), and
  replays the recorded apply call on the CPU with a probe vector: its rotated
  output (this pins down the pairing, the rotary width and the attention
  factor together) and the pairing itself, judged from unit vectors;
- reads each attention module's softmax scale and query-side settings
  (Llama 4's ``use_rope`` / temperature tuning), and replays each layer's
  call of a query-multiplier function of the modeling file (Ministral 3's
  ``get_llama_4_attn_scale``) at positions ``QUERY_POSITIONS``.

A model that runs one stack of decoder layers several times (HRM: its
``num_hidden_layers`` counts the attention calls of a forward, one cache slot
each) has no list of ``num_hidden_layers`` modules: its layers are numbered in
the order the forward calls them, which is the order of its cache slots.

Each type runs in a subprocess of a chunk with a timeout (one hanging model
costs one chunk, not the walk), and each result is cached by transformers
version, so an interrupted walk resumes.  A type transformers cannot build
from its defaults records the error instead: what transformers says, not a guess.
"""
from __future__ import annotations

import argparse
import gzip
import importlib
import json
import math
import os
import subprocess
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, os.pardir, "tests", "data", "zoo_golden.json.gz")
DEFAULT_CACHE = os.path.join(HERE, os.pardir, "build", "zoo-cache")

#: Positions the cos/sin tables and the rotated probe are taken at.  Small enough that
#: transformers' float32 angles stay within ~1e-4 rad of exact.
PROBE_POSITIONS = [0, 1, 7, 100, 1000]
#: Positions a query multiplier is replayed at: below, at and above multiples of the lengths such
#: multipliers step at (8192 and 16384 in the defaults; 262144 the YaRN variant's original length).
QUERY_POSITIONS = [0, 1, 1000, 8190, 8191, 8192, 8193, 16383, 16384, 16385, 32767, 32768, 49151, 49152,
                   131071, 131072, 262143, 262144, 262145, 524288, 1048575, 1048576, 4194304]
YARN_FACTOR = 4.0
VARIANTS = ("default", "yarn4")


# -- which model types to look at ---------------------------------------------------
def model_types():
    from transformers import CONFIG_MAPPING
    return sorted(CONFIG_MAPPING.keys())


def _modeling_file_of(mt):
    """The source of a model type's modeling files, read as text (nothing of the model is imported)."""
    import transformers
    from transformers.models.auto.configuration_auto import model_type_to_module_name
    folder = os.path.join(os.path.dirname(transformers.__file__), "models", model_type_to_module_name(mt))
    if not os.path.isdir(folder):
        return None
    text = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("modeling_") and name.endswith(".py"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                text.append(f.read())
    return "\n".join(text) or None


def has_rotary_class(mt):
    src = _modeling_file_of(mt)
    return src is not None and "RotaryEmbedding(" in src


# -- one model type -------------------------------------------------------------------
def _floats(t):
    return [float(v) for v in t.reshape(-1).tolist()]


def _json_config(config):
    return json.loads(config.to_json_string(use_diff=False))


def _text_path(config, text):
    """Attribute names from config to its text config (empty: the config is the text config)."""
    if text is config:
        return []
    for key, value in vars(config).items():
        if value is text:
            return [key]
    for key, value in vars(config).items():
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            sub = _text_path(value, text)
            if sub is not None and sub:
                return [key] + sub
    return None


def _with_yarn(config, text, factor):
    """The config with YaRN x factor on its text rope, built through the config classes (their checks run)."""
    path = _text_path(config, text)
    if path is None:
        raise LookupError("text config not reachable from the config")
    d = text.to_dict()
    rp = d.get("rope_parameters")
    orig = d.get("max_position_embeddings") or 2048

    def yarn(entry):
        entry = dict(entry or {})
        theta = entry.get("rope_theta")
        # llama_4_scaling_beta: Ministral 3 / Mistral 4's attention reads it from the rope parameters at
        # every forward and fails without it
        new = {k: v for k, v in entry.items() if k in ("rope_theta", "partial_rotary_factor", "mrope_section",
                                                       "mrope_interleaved", "llama_4_scaling_beta")}
        new.update({"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": orig})
        if theta is not None:
            new["rope_theta"] = theta
        return new

    if isinstance(rp, dict) and rp and all(isinstance(v, dict) for v in rp.values()):
        # per layer type: the global layers are the ones a long-context config scales
        # (Gemma 3's linear x8, OLMo 3's YaRN); sliding layers never see long distances
        key = "full_attention" if "full_attention" in rp else next(iter(rp))
        d["rope_parameters"] = {**rp, key: yarn(rp[key])}
    else:
        d["rope_parameters"] = yarn(rp)
    new_text = type(text).from_dict(d)
    if not path:
        return new_text, new_text
    parent = config
    for key in path[:-1]:
        parent = getattr(parent, key)
    setattr(parent, path[-1], new_text)
    return config, new_text


def _model_classes(cfg):
    """The modeling file's model classes for this config class, the plainest (``*Model``) first."""
    mod = importlib.import_module(type(cfg).__module__.replace(".configuration_", ".modeling_"))
    found = [c for c in vars(mod).values() if isinstance(c, type) and getattr(c, "config_class", None) is type(cfg)
             and hasattr(c, "from_pretrained")]
    return sorted(found, key=lambda c: (not c.__name__.endswith("Model"), len(c.__name__)))


def _build_model(config, text):
    import torch
    from transformers import AutoModel
    errors = []
    makers = [lambda c: AutoModel.from_config(c, experts_implementation="eager"), AutoModel.from_config]
    for cfg in (text, config):
        for make in makers:
            try:
                with torch.device("meta"):
                    # eager experts: the grouped-matmul kernels refuse float32 on the meta device
                    return make(cfg), cfg
            except Exception as e:  # noqa: BLE001 - try the next way
                errors.append(f"{type(e).__name__}: {e}")
    for cfg in (text, config):
        try:
            classes = _model_classes(cfg)
        except ImportError:
            continue
        for cls in classes[:1]:
            try:
                with torch.device("meta"):
                    return cls(cfg), cfg
            except Exception as e:  # noqa: BLE001
                errors.append(f"{cls.__name__}: {type(e).__name__}: {e}")
    raise RuntimeError(" | ".join(e[:200] for e in errors[-2:]))


def _decoder_layers(model, n):
    import torch
    best = None
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) == n and "vision" not in name and "visual" not in name \
                and "audio" not in name:
            best = (name, m)
            break
    return best


def _rotary_modules(model):
    return [(n, m) for n, m in model.named_modules()
            if type(m).__name__.endswith("RotaryEmbedding") and not any(
                w in type(m).__name__ for w in ("Vision", "Audio", "Visual"))
            and not any(w in n for w in ("vision", "visual", "audio"))]


def _make_cpu(rot_meta, text):
    cls = type(rot_meta)
    for make in (lambda: cls(config=text), lambda: cls(text)):
        try:
            return make()
        except TypeError:
            continue
    return cls(text)


def _split(emb):
    import torch
    if torch.is_tensor(emb) and emb.is_complex():
        return emb.real, emb.imag
    return emb[0], emb[1]


def probe(mt, variant):
    import torch
    from transformers import CONFIG_MAPPING

    row = {"model_type": mt, "variant": variant}
    try:
        config = CONFIG_MAPPING[mt]()
    except Exception as e:  # noqa: BLE001
        return {**row, "status": "config_error", "error": f"{type(e).__name__}: {e}"[:400]}
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    if variant == "yarn4":
        try:
            config, text = _with_yarn(config, text, YARN_FACTOR)
        except Exception as e:  # noqa: BLE001
            return {**row, "status": "variant_error", "error": f"{type(e).__name__}: {e}"[:400]}
    return _probe_built(row, config, text)


def probe_config(name, raw):
    """A published config.json (a dict) as its model's code runs it: the same record as a zoo row,
    with ``config`` the file as given (what ropescale reads), not transformers' re-save."""
    import copy
    from transformers import AutoConfig
    row = {"model_type": raw.get("model_type"), "variant": name, "config": raw, "curated": True}
    try:
        config = AutoConfig.for_model(raw["model_type"], **copy.deepcopy(
            {k: v for k, v in raw.items() if k != "model_type"}))
    except Exception as e:  # noqa: BLE001
        return {**row, "status": "config_error", "error": f"{type(e).__name__}: {e}"[:400]}
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    row = _probe_built(row, config, text)
    row.update(config=raw, curated=True)
    return row


def _probe_built(row, config, text):
    import torch
    row["text_model_type"] = getattr(text, "model_type", None)
    try:
        row["config"] = _json_config(config)
    except Exception as e:  # noqa: BLE001
        return {**row, "status": "config_error", "error": f"not serializable: {type(e).__name__}: {e}"[:400]}
    try:
        model, used_cfg = _build_model(config, text)
    except Exception as e:  # noqa: BLE001
        return {**row, "status": "model_error", "error": str(e)[:400]}
    rots = _rotary_modules(model)
    if not rots:
        return {**row, "status": "no_text_rope", "model_class": type(model).__name__}
    row["model_class"] = type(model).__name__
    row["rotary_modules"] = [n for n, _ in rots]
    rot_name, rot_meta = rots[0]
    rot_cfg = getattr(rot_meta, "config", None) or text
    try:
        rot = _make_cpu(rot_meta, rot_cfg)
    except Exception as e:  # noqa: BLE001
        return {**row, "status": "rope_error", "error": f"{type(e).__name__}: {e}"[:400]}
    per_type = sorted(rot.rope_type) if isinstance(getattr(rot, "rope_type", None), dict) else None

    # -- the forward on the meta device: which layers call which apply function -----
    module = importlib.import_module(type(model).__module__)
    text_module = importlib.import_module(type(rot).__module__)
    calls, current = [], [None]
    patched = []
    emb_ids = {}
    qcalls = []
    for mod in {module, text_module}:
        for name in [n for n in dir(mod) if _is_query_scale_fn(n) or n.startswith("apply_rotary") and "vision" not in n]:
            fn = getattr(mod, name)
            if not callable(fn):
                continue
            into = qcalls if _is_query_scale_fn(name) else calls

            def wrap(*a, _f=fn, _n=name, _into=into, _m=mod, **k):
                _into.append({"layer": current[0], "fn": _n, "args": a, "kwargs": k, "module": _m})
                return _f(*a, **k)
            patched.append((mod, name, fn))
            setattr(mod, name, wrap)

    def rot_hook(m, args, kwargs, out):
        lt = kwargs.get("layer_type", args[2] if len(args) > 2 else None)
        for t in (out if isinstance(out, tuple) else (out,)):
            if torch.is_tensor(t):
                emb_ids[id(t)] = lt
    hooks = [m.register_forward_hook(rot_hook, with_kwargs=True) for _, m in rots]
    n_layers = getattr(text, "num_hidden_layers", None)
    found = _decoder_layers(model, n_layers) if n_layers else None
    invoked = []
    if found is not None:
        for i, layer in enumerate(found[1]):
            hooks.append(layer.register_forward_pre_hook(lambda m, a, i=i: current.__setitem__(0, i)))
    elif n_layers:
        # one stack run several times (HRM): number the layer calls in the order of the forward
        def count(m, a):
            current[0] = len(invoked)
            invoked.append(m)
        for layer in _stacked_layers(model):
            hooks.append(layer.register_forward_pre_hook(count))
    try:
        ids = torch.zeros(1, len(PROBE_POSITIONS), dtype=torch.long, device="meta")
        try:
            with torch.no_grad():
                model(input_ids=ids)
            row["forward"] = "ok"
        except Exception as e:  # noqa: BLE001
            # Routing of mixture-of-experts blocks reads values (.item(), nonzero) the meta device
            # has not: again with every feed-forward block of the decoder layers an identity, which
            # leaves the attention (and its rotary calls) as it was.
            calls.clear()
            qcalls.clear()
            invoked.clear()
            if found is None or not _identity_feed_forward(found[1]):
                raise
            with torch.no_grad():
                model(input_ids=ids)
            row["forward"] = f"ok (feed-forward blocks skipped after {type(e).__name__})"
    except Exception as e:  # noqa: BLE001
        row["forward"] = f"{type(e).__name__}: {e}"[:300]
    finally:
        for h in hooks:
            h.remove()
        for mod, name, fn in patched:
            setattr(mod, name, fn)
    if found is None and invoked:
        if len(invoked) == n_layers:
            found = ("<layer calls in forward order>", invoked)
            row["layer_calls"] = "forward order"
        else:
            calls.clear()          # calls the layer numbering cannot place
            row["layer_calls"] = f"{len(invoked)} decoder-layer calls for {n_layers} layers: not numbered"
    row["num_layers"] = n_layers
    layer_map = {}
    for c in calls:
        if c["layer"] is None:
            continue
        cos_like = [a for a in c["args"] if torch.is_tensor(a) and id(a) in emb_ids]
        lt = emb_ids[id(cos_like[0])] if cos_like else None
        layer_map.setdefault(c["layer"], {"fn": c["fn"], "layer_type": lt})
    row["rotating_layers"] = sorted(layer_map)
    row["layer_rope_type"] = {str(i): v["layer_type"] for i, v in sorted(layer_map.items())} if per_type else None
    layer_types = getattr(text, "layer_types", None)
    row["layer_types"] = list(layer_types) if layer_types else None

    # -- the rotary module on the CPU, per layer type -----------------------------
    row["ropes"] = {}
    for lt in per_type or [None]:
        prefix = f"{lt}_" if lt else ""
        rec = {}
        inv = getattr(rot, prefix + "inv_freq", None)
        if inv is not None:
            rec["inv_freq"] = _floats(inv)
        att = getattr(rot, prefix + "attention_scaling", None)
        if att is not None:
            rec["attention_factor"] = float(att)
        rec["rope_type"] = rot.rope_type.get(lt) if lt else getattr(rot, "rope_type", None)
        row["ropes"][lt or "default"] = rec

    # -- replay one apply call per layer type on the CPU ----------------------------
    row["apply"] = {}
    seen = set()
    for i in sorted(layer_map):
        info = layer_map[i]
        key = info["layer_type"] or "default"
        if key in seen:
            continue
        seen.add(key)
        call = next(c for c in calls if c["layer"] == i)
        try:
            row["apply"][key] = _replay(call, rot, text, info["layer_type"], emb_ids, text_module)
            row["apply"][key]["layer"] = i
        except Exception as e:  # noqa: BLE001
            row["apply"][key] = {"error": f"{type(e).__name__}: {e}"[:300], "layer": i}

    # -- attention-side scales --------------------------------------------------------
    row["attention"] = _attention(found[1] if found else [], n_layers)
    for c in qcalls:
        i = c["layer"]
        if i is None or i >= len(row["attention"]) or "query_scale" in row["attention"][i]:
            continue
        try:
            row["attention"][i]["query_scale"] = _replay_query_scale(c)
        except Exception as e:  # noqa: BLE001
            row["attention"][i]["query_scale"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    row["status"] = "ok"
    return row


def _is_query_scale_fn(name):
    """A modeling-file function giving the per-position factor on the queries (``get_llama_4_attn_scale``)."""
    return name.startswith("get_") and name.endswith("attn_scale")


def _stacked_layers(model):
    """Decoder layers of lists shorter than ``num_hidden_layers`` (stacks the forward runs several times)."""
    import torch
    return [layer for name, m in model.named_modules()
            if isinstance(m, torch.nn.ModuleList) and not any(w in name for w in ("vision", "visual", "audio"))
            for layer in m if type(layer).__name__.endswith("DecoderLayer")]


def _replay_query_scale(call):
    """The recorded query-multiplier call again with ``QUERY_POSITIONS`` as the position ids: its values."""
    import torch
    args, kwargs = list(call["args"]), dict(call["kwargs"])
    if not args or not torch.is_tensor(args[0]):
        raise RuntimeError("the first argument of the query multiplier is not the position ids")
    args[0] = torch.tensor([QUERY_POSITIONS])
    fn = getattr(call["module"], call["fn"])
    with torch.no_grad():
        out = fn(*args, **kwargs)
    return _floats(out.to(torch.float64))


def _identity_feed_forward(layers):
    n = 0
    for layer in layers:
        for name, child in layer.named_children():
            if any(w in name.lower() for w in ("mlp", "moe", "feed_forward", "ffn", "experts")):
                child.forward = lambda x, *a, **k: x
                n += 1
    return n > 0


def _replay(call, rot, text, layer_type, emb_ids, text_module):
    """The recorded apply call again, on the CPU, with real cos/sin and probe vectors."""
    import torch
    pos = torch.tensor(PROBE_POSITIONS)[None]
    is_mrope = hasattr(rot, "mrope_section") or "mrope_section" in (
        (getattr(text, "rope_parameters", None) or {}) if not layer_type else {})
    inv = getattr(rot, (f"{layer_type}_" if layer_type else "") + "inv_freq", None)
    x = torch.zeros(1, len(PROBE_POSITIONS), 2 * inv.numel() if inv is not None else 2)
    pid = pos[None].expand(3, 1, -1) if is_mrope else pos
    with torch.no_grad():
        emb = rot(x, pid) if layer_type is None else rot(x, pid, layer_type)
    real = list(emb) if isinstance(emb, tuple) else [emb]
    args, kwargs = list(call["args"]), dict(call["kwargs"])
    emb_slots = [j for j, a in enumerate(args) if torch.is_tensor(a) and id(a) in emb_ids]
    if len(emb_slots) != len(real):
        # the model sliced or reshaped the rotary output before applying it
        raise RuntimeError(f"apply call takes {len(emb_slots)} rotary tensors, the module returns {len(real)}")
    qk_slots = [j for j, a in enumerate(args) if torch.is_tensor(a) and j not in emb_slots and a.is_floating_point()]
    meta_shape = {j: tuple(args[j].shape) for j in emb_slots}
    for j, r in zip(emb_slots, real):
        if tuple(r.shape) != meta_shape[j]:
            r = r.reshape(meta_shape[j]) if r.numel() == math.prod(meta_shape[j]) else r
        args[j] = r
    for j, a in enumerate(args):
        if torch.is_tensor(a) and a.device.type == "meta" and j not in emb_slots and j not in qk_slots:
            raise RuntimeError(f"apply argument {j} is a tensor the probe cannot rebuild")
    q_shape = tuple(args[qk_slots[0]].shape)
    d = q_shape[-1]
    # the token axis of q: the one of length len(PROBE_POSITIONS) (first such after the batch)
    t_axis = next(a for a in range(1, len(q_shape) - 1) if q_shape[a] == len(PROBE_POSITIONS))

    def run(row_vec):
        q = torch.zeros(q_shape)
        q[...] = row_vec
        a = list(args)
        for j in qk_slots:
            a[j] = q.clone() if args[j].shape == q_shape else torch.zeros(args[j].shape)
        with torch.no_grad():
            out = call_fn(*a, **kwargs)
        y = out[0] if isinstance(out, (tuple, list)) else out
        idx = [0] * len(q_shape)
        idx[t_axis] = slice(None)
        idx[-1] = slice(None)
        return y[tuple(idx)]           # (positions, d)

    call_fn = getattr(text_module, call["fn"])
    x_row = 1.0 + torch.arange(d, dtype=torch.float32) / d
    rotated = run(x_row)
    rec = {"fn": call["fn"], "head_width": d, "x_row": _floats(x_row),
           "positions": PROBE_POSITIONS, "rotated": [_floats(r) for r in rotated]}
    # pairing: which features span the plane of feature 0 at position 1
    def support(j):
        e = torch.zeros(d)
        e[j] = 1.0
        y = run(e)[1]
        return frozenset(i for i in range(d) if abs(float(y[i])) > 1e-6)
    s0 = support(0)
    partners = [j for j in range(1, d) if support(j) == s0]
    rec["pairing"] = {(1,): "interleaved"}.get(tuple(partners), "half" if len(partners) == 1 else f"other {partners}")
    rec["partner_of_0"] = partners
    moved = run(torch.ones(d))[1] - torch.ones(d)
    rec["rotated_features"] = [i for i in range(d) if abs(float(moved[i])) > 1e-7]
    return rec


def _attention(layers, n_layers):
    """Softmax factor (scaling * sqrt(head dim)) and query-side settings of each layer's attention."""
    out = []
    for i, layer in enumerate(layers):
        rec = {}
        for name, m in layer.named_modules():
            s = getattr(m, "scaling", None)
            if isinstance(s, (int, float)) and "attn" in name.lower() or isinstance(s, (int, float)) and \
                    "attention" in type(m).__name__.lower():
                d = getattr(m, "qk_head_dim", None) or getattr(m, "head_dim", None)
                if isinstance(d, int):
                    rec["softmax_factor"] = float(s) * math.sqrt(d)
                    rec["qk_head_dim"] = d
                for key in ("use_rope", "attn_temperature_tuning", "floor_scale", "attn_scale"):
                    v = getattr(m, key, None)
                    if isinstance(v, (bool, int, float)):
                        rec[key] = v
                break
        out.append(rec)
    return out


# -- the walk ---------------------------------------------------------------------------
def worker(types):
    import torch
    import transformers
    torch.set_default_dtype(torch.float32)
    # MoE routing calls nonzero(); on the meta device it may assume every element is non-zero
    import torch.fx.experimental._config as fx_config
    fx_config.meta_nonzero_assume_all_nonzero = True
    transformers.logging.set_verbosity_error()
    warnings.simplefilter("ignore")
    for mt in types:
        for variant in VARIANTS:
            t0 = time.time()
            try:
                row = probe(mt, variant)
            except Exception as e:  # noqa: BLE001 - a bug of the probe, recorded as such
                row = {"model_type": mt, "variant": variant, "status": "probe_error",
                       "error": "".join(traceback.format_exception_only(type(e), e))[:400]}
            row["seconds"] = round(time.time() - t0, 2)
            print("ZOO " + json.dumps(row), flush=True)


def _cache_path(cache, version, mt):
    return os.path.join(cache, version, f"{mt}.json")


def walk(types, cache, chunk, timeout):
    import transformers
    version = transformers.__version__
    os.makedirs(os.path.join(cache, version), exist_ok=True)
    todo = [mt for mt in types if not os.path.exists(_cache_path(cache, version, mt))]
    print(f"{len(types)} types with a rotary class, {len(todo)} not cached", flush=True)
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        t0 = time.time()
        try:
            res = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", ",".join(part)],
                                 capture_output=True, text=True, timeout=timeout)
            lines = res.stdout.splitlines()
            tail = res.stderr[-300:]
        except subprocess.TimeoutExpired as e:
            lines = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            lines = lines.splitlines()
            tail = f"timeout after {timeout} s"
        rows = {}
        for line in lines:
            if line.startswith("ZOO "):
                r = json.loads(line[4:])
                rows.setdefault(r["model_type"], {})[r["variant"]] = r
        for mt in part:
            got = rows.get(mt, {})
            if len(got) < len(VARIANTS):
                for v in VARIANTS:
                    got.setdefault(v, {"model_type": mt, "variant": v, "status": "probe_error",
                                       "error": f"worker died or timed out: {tail}"})
                if "timeout" in tail and len(part) > 1:
                    continue        # not cached: retried alone on the next run
            with open(_cache_path(cache, version, mt), "w") as f:
                json.dump(got, f)
        print(f"  {start + len(part)}/{len(todo)} ({time.time() - t0:.0f} s)", flush=True)


def _g(v, digits):
    return float(f"{v:.{digits}g}")


def _compact(row):
    """The row as committed: the probe's output to 7 digits (the tests compare it to 2e-3), inv_freq
    to float32's 9, the probe input left out (it is ``1 + j / d``), labels of no rope interest dropped."""
    row = json.loads(json.dumps(row))
    for cfg in [row.get("config")]:
        for key in ("id2label", "label2id"):
            if isinstance(cfg, dict):
                cfg.pop(key, None)
    for rec in (row.get("apply") or {}).values():
        rec.pop("x_row", None)
        if "rotated" in rec:
            rec["rotated"] = [[_g(v, 7) for v in r] for r in rec["rotated"]]
    for rec in (row.get("ropes") or {}).values():
        if "inv_freq" in rec:
            rec["inv_freq"] = [_g(v, 9) for v in rec["inv_freq"]]
    att = row.get("attention")
    if isinstance(att, list):   # most layers share one record: each written once
        kinds = []
        for a in att:
            if a not in kinds:
                kinds.append(a)
        row["attention"] = {"records": kinds, "layers": [kinds.index(a) for a in att]}
    return row


def collect(types, cache):
    import torch
    import transformers
    version = transformers.__version__
    rows = []
    for mt in types:
        p = _cache_path(cache, version, mt)
        if os.path.exists(p):
            with open(p) as f:
                got = json.load(f)
            rows += [_compact(got[v]) for v in VARIANTS if v in got]
    return {"transformers_version": version, "torch_version": torch.__version__, "generator": "tools/zoo.py",
            "probe_positions": PROBE_POSITIONS, "query_positions": QUERY_POSITIONS, "yarn_factor": YARN_FACTOR,
            "model_types_without_rotary_class": [mt for mt in model_types() if mt not in set(types)],
            "rows": rows}


README_MARK = "<!-- zoo figure: tools/zoo.py --report -->"


def write_report(golden):
    """docs/zoo.md and the README paragraph after README_MARK, from tests/_zoo.py's verdicts."""
    root = os.path.join(HERE, os.pardir)
    sys.path.insert(0, os.path.join(root, "tests"))
    sys.path.insert(0, os.path.join(root, "src"))
    import _zoo
    data = _zoo.load(golden)
    vs = _zoo.verdicts(data)
    with open(os.path.join(root, "docs", "zoo.md"), "w", encoding="utf-8") as f:
        f.write(_zoo.report(data, vs))
    readme = os.path.join(root, "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    if README_MARK not in text:
        raise SystemExit(f"README.md has no {README_MARK!r} line to put the figure after")
    head, tail = text.split(README_MARK, 1)
    rest = tail.split("\n\n", 1)[1] if "\n\n" in tail else ""
    sentence = _zoo.figure(data, vs) + " Every type with its verdict: `docs/zoo.md`."
    with open(readme, "w", encoding="utf-8") as f:
        f.write(head + README_MARK + "\n" + sentence + "\n\n" + rest)
    print(sentence)
    return 0


CONFIG_DIR = os.path.join(HERE, os.pardir, "tests", "data", "configs")
CONFIGS_OUT = os.path.join(HERE, os.pardir, "tests", "data", "configs_zoo.json.gz")


def configs_worker(names):
    """``--configs-worker``: probe_config for each tests/data/configs/NAME.json, one JSON line each."""
    import torch
    import transformers
    torch.set_default_dtype(torch.float32)
    import torch.fx.experimental._config as fx_config
    fx_config.meta_nonzero_assume_all_nonzero = True
    transformers.logging.set_verbosity_error()
    warnings.simplefilter("ignore")
    for name in names:
        with open(os.path.join(CONFIG_DIR, f"{name}.json")) as f:
            raw = json.load(f)
        t0 = time.time()
        try:
            row = probe_config(name, raw)
        except Exception as e:  # noqa: BLE001 - a bug of the probe, recorded as such
            row = {"model_type": raw.get("model_type"), "variant": name, "config": raw, "status": "probe_error",
                   "error": "".join(traceback.format_exception_only(type(e), e))[:400]}
        row["seconds"] = round(time.time() - t0, 2)
        print("ZOO " + json.dumps(row), flush=True)


def walk_configs(out, timeout, only=None):
    """Every curated config (tests/data/configs/*.json) through its model's forward: ``--configs``
    (with ``only``: those configs afresh, the other rows of ``out`` kept)."""
    import torch
    import transformers
    names = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json"))
    rows = {}
    if only:
        with gzip.open(out, "rt", encoding="utf-8") as f:
            rows = {r["variant"]: r for r in json.load(f)["rows"]}
    for name in names:
        if only and name not in only:
            continue          # one process per config: a model that hangs costs its own row only
        try:
            res = subprocess.run([sys.executable, os.path.abspath(__file__), "--configs-worker", name],
                                 capture_output=True, text=True, timeout=timeout)
            got = [json.loads(line[4:]) for line in res.stdout.splitlines() if line.startswith("ZOO ")]
            tail = res.stderr[-300:]
        except subprocess.TimeoutExpired:
            got, tail = [], f"timeout after {timeout} s"
        rows[name] = got[0] if got else {"variant": name, "status": "probe_error", "error": f"worker died: {tail}"}
        print(f"  {name}: {rows[name].get('status')} {rows[name].get('forward', '')[:60]}", flush=True)
    data = {"transformers_version": transformers.__version__, "torch_version": torch.__version__,
            "generator": "tools/zoo.py --configs", "probe_positions": PROBE_POSITIONS,
            "query_positions": QUERY_POSITIONS,
            "rows": [rows[n] if only and n not in only else _compact(rows[n]) for n in names]}
    _write(out, data)
    print(f"wrote {len(names)} rows to {out}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--cache", default=DEFAULT_CACHE)
    ap.add_argument("--only", default=None, help="comma-separated model types")
    ap.add_argument("--chunk", type=int, default=12)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--collect", action="store_true", help="with --only: still write --out from the whole cache")
    ap.add_argument("--update", action="store_true",
                    help="with --only: probe those types afresh and replace their rows in --out, keeping the others")
    ap.add_argument("--report", action="store_true",
                    help="only rewrite docs/zoo.md and the README's figure from the golden data and this ropescale")
    ap.add_argument("--configs", action="store_true",
                    help=f"probe every curated config of tests/data/configs instead, into {CONFIGS_OUT}")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--configs-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        worker(args.worker.split(","))
        return 0
    if args.configs_worker is not None:
        configs_worker(args.configs_worker.split(","))
        return 0
    if args.configs:
        return walk_configs(CONFIGS_OUT, args.timeout, args.only.split(",") if args.only else None)
    if args.report:
        return write_report(args.out)
    import transformers
    transformers.logging.set_verbosity_error()
    types = [mt for mt in model_types() if has_rotary_class(mt)]
    if args.update and not args.only:
        ap.error("--update needs --only TYPE,...")
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(types))
        if unknown:
            ap.error(f"--only: not model types with a rotary class in transformers {transformers.__version__}: "
                     f"{', '.join(unknown)}")
        if args.update:
            for mt in wanted:      # probed afresh, not read from an older walk's cache
                p = _cache_path(args.cache, transformers.__version__, mt)
                if os.path.exists(p):
                    os.remove(p)
        walk(wanted, args.cache, args.chunk, args.timeout)
    else:
        walk(types, args.cache, args.chunk, args.timeout)
    if args.update:
        data = update(args.out, wanted, args.cache)
    elif not args.only or args.collect:
        data = collect(types, args.cache)
    else:
        return 0
    _write(args.out, data)
    print(f"wrote {len(data['rows'])} rows to {args.out}")
    return 0


def update(path, types, cache):
    """The golden data at ``path`` with the rows of ``types`` replaced by their cached (fresh) rows."""
    import transformers
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    if data["transformers_version"] != transformers.__version__:
        raise SystemExit(f"{path} is from transformers {data['transformers_version']}, this is "
                         f"{transformers.__version__}: walk the whole zoo instead of updating some rows")
    fresh = collect(types, cache)["rows"]
    done = set()
    rows = []
    for row in data["rows"]:
        mt = row["model_type"]
        if mt in types:
            if mt not in done:
                rows += [r for r in fresh if r["model_type"] == mt]
                done.add(mt)
        else:
            rows.append(row)
    rows += [r for r in fresh if r["model_type"] not in done]
    data["rows"] = rows
    data["query_positions"] = QUERY_POSITIONS
    return data


def _write(path, data):
    # mtime=0: the same data gives the same bytes
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write((json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n").encode())


if __name__ == "__main__":
    sys.exit(main())
