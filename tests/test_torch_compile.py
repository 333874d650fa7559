"""ropescale.torch inside the tools training scripts use: torch.compile, torch.export, fake tensors.

Each compile costs seconds of CPU, so the models are tiny (2 layers, width
64) and the tests few; they carry the ``compile`` mark (``-m "not compile"``
leaves them out).  The oracle for numbers is the same code run eagerly;
the oracle for "no graph break" is ``torch._dynamo.explain``.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ropescale  # noqa: E402
import ropescale.torch as rt  # noqa: E402

pytestmark = pytest.mark.compile

YARN = ropescale.Rope(16, 10000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32})


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _breaks(fn, *args):
    e = torch._dynamo.explain(fn)(*args)
    return e.graph_break_count, [r.reason.splitlines()[0] for r in e.break_reasons]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_functions_and_module_trace_with_no_graph_break_forward_and_backward(dtype):
    x = torch.randn(5, 4, 16, dtype=dtype, requires_grad=True)
    pos = torch.arange(5)[:, None]
    emb = rt.RotaryEmbedding(YARN)

    def step(x, pos):
        c, s = emb(x, pos[:, 0][None])
        y1 = rt.apply_rotary(x, c[0][:, None], s[0][:, None], layout="full")
        y2 = rt.apply_rotary_positions(x, pos, YARN)
        return (y1.float() * y2.float()).sum()

    assert _breaks(step, x, pos) == (0, [])
    want = step(x, pos)
    want.backward()
    gwant = x.grad.clone()
    x.grad = None
    # aot_eager: dynamo's graph and AOTAutograd's forward/backward through the ops' fake and autograd
    # registrations, without inductor's code generation (the README loop below runs inductor)
    got = torch.compile(step, fullgraph=True, backend="aot_eager")(x, pos)
    got.backward()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    torch.testing.assert_close(x.grad, gwant, rtol=tol, atol=tol)


def _tiny_llama(seed=0):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                                   intermediate_size=64, vocab_size=61, max_position_embeddings=32)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg)


def _readme_training_block():
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Training with `torch.compile`", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```py\n(.*?)```", section, flags=re.S)
    return block


def test_readme_training_loop_compiles_fullgraph_in_bfloat16_and_matches_eager():
    """The README's loop: a patched tiny Llama, a bf16 train step, 0 graph breaks, losses as eager."""
    pytest.importorskip("transformers")
    block = _readme_training_block()
    assert "torch.compile(model, fullgraph=True)" in block
    runs = {}
    for name, code in (("compiled", block), ("eager", block.replace("torch.compile(model, fullgraph=True)", "model"))):
        torch.manual_seed(0)
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
        runs[name] = namespace
    assert isinstance(runs["compiled"]["model"].model.rotary_emb, rt.RotaryEmbedding)
    losses = {name: ns["losses"] for name, ns in runs.items()}
    np.testing.assert_allclose(losses["compiled"], losses["eager"], rtol=2e-2)  # bfloat16: 8 bits
    model, ids = runs["eager"]["model"], runs["eager"]["ids"]
    assert _breaks(lambda i: model(i, labels=i).loss, ids) == (0, [])


def test_patched_model_has_no_graph_break_in_float32_and_exports():
    import ropescale.hf as rhf

    model = _tiny_llama().eval()
    rhf.patch(model, ("yarn", 128))
    ids = torch.randint(0, 61, (1, 40), generator=torch.Generator().manual_seed(2))
    assert _breaks(lambda i: model(i, labels=i).loss, ids) == (0, [])  # float32 (the README loop: bfloat16)
    ep = torch.export.export(model, (ids,), kwargs={"use_cache": False})
    assert any("ropescale.cos_sin" in str(n.target) for n in ep.graph.nodes)
    with torch.no_grad():
        want = model(ids, use_cache=False).logits
        got = ep.module()(ids, use_cache=False)
    got = got.logits if hasattr(got, "logits") else got[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
