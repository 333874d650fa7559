"""The registry (``ropescale.methods.SPECS``) really is the only list of methods.

Every consumer (the torch module, ``hf.patch``, ``precision``, ``ropescale eval``,
the CLI, the plots) reads its fields; these tests fail when one of them keeps a
hand list again, when a field disagrees with the installed transformers, or when
the type stub of the C glue drifts from the glue.
"""
import ast
import json
import pathlib
import re
import sys
import warnings

import numpy as np
import pytest

import ropescale
from ropescale import _core, methods
from ropescale.methods import SPECS, MethodSpec

SRC = pathlib.Path(ropescale.__file__).parent

# -- no method name outside the registry ------------------------------------------------
# Adding or renaming a method edits methods.py (and the formula: reference.py and csrc/,
# CONTRIBUTING's recipe), nothing else.  So no other module of the package may spell a
# method name (or alias): not as a string (a comparison, a dict key, a match case, an
# argument), not as a part of an f-string, not quoted or listed inside a message, and not as
# a C method code (``_core.YARN``).  Docstrings are prose and examples: not scanned.
_NAMES = frozenset(SPECS) | frozenset(methods.ALIASES)
_CODES = frozenset(name.upper() for name in _core.METHOD_NAMES)
_NAME = "|".join(sorted(map(re.escape, _NAMES), key=len, reverse=True))
_WORD = rf"(?<![\w.-])(?:{_NAME})(?![\w-])"
# inside a string: a name quoted as a value ('yarn', "yarn", `yarn`) or two names listed in a row
# ("linear, yarn", "dynamic/longrope"): a hand list in a message
_IN_TEXT = re.compile(rf"""(['"`])(?:{_NAME})\1|{_WORD}(?:\s*,\s*|\s*/\s*|\s+or\s+|\s+and\s+){_WORD}""")

# No file or line is exempt: another engine's spelling of a method (llama.cpp's scaling types)
# is a MethodSpec field (gguf_scaling_type), and another engine's rule about one method compares
# with that method's constant.
_FIX = ("Method names are written once, in ropescale/methods.py.  Instead: compare with its constants "
        "(methods.YARN, methods.UNSCALED, ...); read a MethodSpec field for a per-method fact (add one, with a "
        "docstring and a citation, when none says it); keep another engine's spelling of a method in a field "
        "(like gguf_scaling_type); build messages from SPECS.  CONTRIBUTING.md, 'Adding a scaling method'.")


def _docstring_nodes(tree):
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                out.add(id(body[0].value))
    return out


def _method_spellings(source):
    """``(line, what)`` for each method name spelt in ``source`` outside docstrings."""
    tree = ast.parse(source)
    docs = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if node.value in _NAMES:
                found.append((node.lineno, repr(node.value)))
            else:
                found += [(node.lineno, f"{m.group(0)!r} in a string") for m in _IN_TEXT.finditer(node.value)]
        elif isinstance(node, ast.Attribute) and node.attr in _CODES and isinstance(node.value, ast.Name) \
                and node.value.id == "_core":
            found.append((node.lineno, f"_core.{node.attr}"))
    return sorted(set(found))


@pytest.mark.parametrize("path", sorted(p for p in SRC.rglob("*.py") if p.name != "methods.py"),
                         ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_outside_the_registry_spells_a_method_name(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    found = _method_spellings("\n".join(lines))
    assert not found, (f"src/ropescale/{path.relative_to(SRC)} spells a method name: " +
                       "; ".join(f"line {n}: {what} in `{lines[n - 1].strip()}`" for n, what in found) +
                       ". " + _FIX)


_MATCH = pytest.mark.skipif(sys.version_info < (3, 10), reason="match needs Python 3.10 (PyPy 3.9)")


@pytest.mark.parametrize("snippet", [
    'ok = method == "yarn"',                                   # a comparison
    'ok = method in ("dynamic", "x")',                         # membership in a hand list
    'table = {"longrope": 1}',                                 # a dict key
    'table = {"x": "ntk"}',                                    # a dict value
    'r = Rope(64, 1e4, {"rope_type": "linear", "factor": 2})',  # an argument's value
    'def f(method="default"):\n    pass',                      # a default argument
    'x = config["su"]',                                        # a subscript (an alias)
    pytest.param('match m:\n    case "llama3":\n        pass', marks=_MATCH),               # a match case
    pytest.param('match m:\n    case Spec(name="ntk_alpha"):\n        pass', marks=_MATCH),   # a class pattern
    'msg = f"rope_type {x!r}: not \'dynamic_yarn\'"',          # quoted in an f-string
    'msg = f"{x}" "mistral_yarn"',                             # an f-string's literal part
    'msg = f"methods it can: default, linear, {rest}"',        # listed in an f-string
    'msg = "one of none, linear, yarn, longrope"',             # listed in a plain string
    'msg = "for dynamic or longrope only"',                    # listed with "or"
    'code = _core.YARN',                                       # a C method code
    'class C:\n    """Prose."""\n    kind = "axial"',          # a class attribute (not the docstring)
])
def test_the_scan_sees_each_form(snippet):
    assert _method_spellings(snippet), snippet


@pytest.mark.parametrize("snippet", [
    '"""A docstring may say yarn, ntk or "dynamic" and show ``Rope.extend(8, "yarn")``."""',
    'def f():\n    """linear, ntk: prose."""\n    return 1',
    'help = "head dimension (default 128)"',                   # the English word
    'topic = "yarn_attention"; code = "yarn-truncate"; key = "lowest_period_ntk"',
    'src = "sglang yarn.py, rope_variant.py"',
    'x = methods.YARN; y = _core.scaled_inv_freq',
])
def test_the_scan_lets_prose_and_other_words_through(snippet):
    assert not _method_spellings(snippet), snippet


def test_each_method_has_one_named_constant():
    # the constant of a method is its name in capitals (the unscaled rope's: UNSCALED); consumers
    # compare with these, so a rename is one edit in methods.py
    constants = {k: v for k, v in vars(methods).items() if k.isupper() and isinstance(v, str) and v in SPECS}
    roles = {"DEFAULT_EXTENSION", "BASE_SCALING"}   # a role a method plays, not its name
    for name in SPECS:
        const = "UNSCALED" if name == methods.UNSCALED else name.upper()
        assert constants.get(const) == name, f"methods.{const} should be {name!r}"
        assert const in methods.__all__, const
    assert set(constants) - roles == {"UNSCALED" if n == methods.UNSCALED else n.upper() for n in SPECS}
    assert methods.DEFAULT_EXTENSION in SPECS and methods.BASE_SCALING in SPECS


def test_gguf_scaling_types_are_llama_cpps():
    gguf = pytest.importorskip("gguf")
    ours = {s.gguf_scaling_type for s in SPECS.values() if s.gguf_scaling_type is not None}
    assert ours == {t.value for t in gguf.RopeScalingType}
    assert len(ours) == sum(s.gguf_scaling_type is not None for s in SPECS.values())   # one method per type


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if not s.layout_only])
def test_gguf_writes_exactly_the_methods_it_says_it_can(name):
    from ropescale import gguf
    rope = ropescale.Rope(64, 1e4).extend(16384, name, original_len=4096)
    if name not in gguf._WRITABLE:
        with pytest.raises(ValueError, match="methods it can: " + ", ".join(gguf._WRITABLE)):
            gguf.metadata(rope)
        return
    # written with its llama.cpp type; one without a type (a base change, rope_freqs) as the unscaled one's
    none = SPECS[methods.UNSCALED].gguf_scaling_type
    assert gguf.metadata(rope).get("llama.rope.scaling.type", none) == (SPECS[name].gguf_scaling_type or none)


def test_extend_is_required_for_every_method_but_the_unscaled_one():
    for name, spec in SPECS.items():
        if name != methods.UNSCALED and not spec.layout_only:
            assert spec.extend is not None, name
    with pytest.raises(ValueError, match="extend is required"):
        MethodSpec("made_up", "a method without extend")
    MethodSpec("made_up_layout", "a layout", layout_only=True)   # layouts build no extension


def test_length_rule_is_checked():
    with pytest.raises(ValueError, match="length_rule"):
        MethodSpec("made_up", "x", extend=lambda s, m, n: {}, length_rule="sometimes")


def test_in_transformers_is_what_the_installed_transformers_implements():
    mru = pytest.importorskip("transformers.modeling_rope_utils")
    known = set(mru.ROPE_INIT_FUNCTIONS) | {methods.UNSCALED}
    assert {n for n, s in SPECS.items() if s.in_transformers} == known & set(SPECS)


def test_longest_seen_is_transformers_dynamic_update_rule():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    method = next(n for n, s in SPECS.items() if s.length_rule == "longest_seen")
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=2, max_position_embeddings=64,
                      rope_parameters={"rope_type": method, "factor": 2.0, "rope_theta": 10000.0})
    emb = LlamaRotaryEmbedding(cfg)
    rope = ropescale.Rope.from_hf({"hidden_size": 64, "num_attention_heads": 2, "max_position_embeddings": 64,
                                   "rope_parameters": {"rope_type": method, "factor": 2.0, "rope_theta": 10000.0}})
    longest = None
    x = torch.zeros(1, 1, 32)
    for n in (10, 200, 100, 30, 300, 64, 65):
        with torch.no_grad():
            emb(x, torch.arange(n)[None])
        longest = methods.length_at(method, n, rope.original_max_position_embeddings, longest)
        want = rope.inv_freq_at(longest)[0]
        np.testing.assert_allclose(emb.inv_freq.double().numpy(), want, rtol=2e-7)


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if s.length_rule == "current"])
def test_current_length_methods_take_this_calls_length(name):
    for n in (5, 4096, 12000):
        assert methods.length_at(name, n, 4096, 20000) == n


def _stub_functions():
    tree = ast.parse((SRC / "_core.pyi").read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    names = {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
    return funcs, names


def test_core_stub_lists_exactly_what_the_glue_exports():
    funcs, names = _stub_functions()
    codes = {m.upper() for m in _core.METHOD_NAMES}   # the stub's __getattr__ catch-all
    exported = {n for n in dir(_core) if not n.startswith("__")} - codes
    declared = (set(funcs) | names) - {"__getattr__", "Positions"}
    assert declared == exported, (f"_core.pyi declares {sorted(declared - exported)} the glue lacks and lacks "
                                  f"{sorted(exported - declared)}")
    for name in set(funcs) - {"__getattr__"}:
        assert callable(getattr(_core, name)), name


def test_core_stub_scaled_inv_freq_takes_every_scaling_param():
    funcs, _ = _stub_functions()
    kw = [a.arg for a in funcs["scaled_inv_freq"].args.kwonlyargs]
    assert sorted(kw) == sorted(_core.SCALING_PARAMS)
    # and the glue really accepts each of them by name (a misspelt one is refused)
    for key in kw:
        value = [1.0] * 4 if key.endswith("_factor") and key.startswith(("short", "long")) else \
            True if key == "truncate" else 0 if key == "rotated_pairs" else 2.0
        try:
            _core.scaled_inv_freq(8, 1e4, _core.METHOD_NAMES.index("default"), **{key: value})
        except TypeError as e:  # pragma: no cover - a stub key the glue does not know
            pytest.fail(f"_core.scaled_inv_freq refuses the stub's keyword {key!r}: {e}")
        except ValueError:
            pass


# -- regression tests of consumers that kept their own lists (issue 20) ---------------
def _dynamic_yarn():
    return ropescale.Rope(64, 10000.0, {"rope_type": "dynamic_yarn", "original_max_position_embeddings": 4096})


def test_torch_dynamic_yarn_tables_equal_rope_cos_sin_at_every_length():
    torch = pytest.importorskip("torch")
    from ropescale.torch import RotaryEmbedding
    rope = _dynamic_yarn()
    emb = RotaryEmbedding(rope)
    x = torch.zeros(1, 1, 64, dtype=torch.float64)
    for n in (100, 4096, 4097, 12000, 5000, 30000, 10):
        pos = np.arange(n)
        c, s = emb(x, torch.arange(n)[None])
        want_c, want_s = rope.cos_sin(pos, dtype=np.float64)
        np.testing.assert_allclose(c[0, :, :32].numpy(), want_c, atol=1e-12, err_msg=f"length {n}")
        np.testing.assert_allclose(s[0, :, :32].numpy(), want_s, atol=1e-12, err_msg=f"length {n}")


def test_precision_takes_dynamic_yarn_at_the_measured_length():
    from ropescale import precision
    rope = _dynamic_yarn()
    m = 20000
    rep = precision.report(rope, m, ["float64"])
    np.testing.assert_array_equal(rep.inv_freq, rope.inv_freq_at(m + 1)[0])
    assert not np.array_equal(rep.inv_freq, rope.inv_freq)


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if s.trained_length])
def test_eval_scaling_dict_gets_the_trained_length_for_every_method_that_has_one(name):
    from ropescale import eval as ev
    spec = SPECS[name]
    sc = {k: v for k, v in spec.extend(4.0, 2048, 32).items() if k != "original_max_position_embeddings"}
    (col,) = ev.parse_methods("", [json.dumps({"rope_type": name, **sc})])
    base = ropescale.Rope(64, 10000.0)
    rope = col.rope(base, 8192, 2048)
    assert rope.method == name
    assert rope.original_max_position_embeddings == 2048


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if not s.in_transformers and not s.layout_only])
def test_hf_rope_parameters_writes_only_rope_types_transformers_knows(name):
    pytest.importorskip("torch")
    from ropescale import hf
    rope = ropescale.Rope(64, 10000.0).extend(16384, name, original_len=4096)
    try:
        params = hf.rope_parameters(rope)
    except ValueError as e:
        assert name in str(e) and "transformers" in str(e)
        return
    assert SPECS[params["rope_type"]].in_transformers
    # written as a base change: transformers' default rope with that base gives the same frequencies
    np.testing.assert_allclose(ropescale.inv_freq(rope.rotary_dim, params["rope_theta"]), rope.inv_freq, rtol=1e-12)


def test_hf_patch_refuses_a_method_transformers_lacks_and_leaves_the_model_alone():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from ropescale import hf
    cfg = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1,
                                   intermediate_size=64, vocab_size=32, max_position_embeddings=256)
    model = transformers.LlamaForCausalLM(cfg)
    before = type(model.model.rotary_emb)
    params_before = dict(model.config.rope_parameters)
    with pytest.raises(ValueError, match="ntk_by_parts"):
        hf.patch(model, ("ntk_by_parts", 1024))
    assert type(model.model.rotary_emb) is before
    assert dict(model.config.rope_parameters) == params_before
    # a base change (ntk_alpha) is written as transformers' default rope, which loads anywhere
    hf.patch(model, {"rope_type": "ntk_alpha", "alpha": 4.0})
    assert model.config.rope_parameters["rope_type"] == methods.UNSCALED


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if s.length_dependent])
def test_parity_never_calls_a_length_dependent_method_length_independent(name):
    # parity's length-rule text came from a hand list (dynamic, longrope) and said dynamic_yarn's
    # frequencies "do not depend on the sequence length"
    from ropescale import parity
    rope = ropescale.Rope(64, 1e4).extend(16384, name, original_len=4096)
    cfg = {"hidden_size": 64, "num_attention_heads": 1, "max_position_embeddings": 16384, **rope.to_hf()}
    v = parity.view(cfg, "transformers", 8192)
    assert not v.length_rule.startswith("none"), (name, v.length_rule)
