"""ropescale.torch inside the tools training scripts use: torch.compile, torch.export, fake tensors.

Each compile costs seconds of CPU, so the models are tiny (2 layers, width
64) and the tests few; they carry the ``compile`` mark (``-m "not compile"``
leaves them out).  The oracle for numbers is the same code run eagerly;
the oracle for "no graph break" is ``torch._dynamo.explain``.
"""
import copy

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
    got = torch.compile(step, fullgraph=True)(x, pos)
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


def test_patched_tiny_llama_train_step_compiles_fullgraph_in_bfloat16_and_matches_eager():
    import ropescale.hf as rhf

    model = _tiny_llama()
    assert rhf.patch(model, ("yarn", 128)) == ["model.rotary_emb"]
    model = model.to(torch.bfloat16)
    ids = torch.randint(0, 61, (2, 48), generator=torch.Generator().manual_seed(1))
    assert _breaks(lambda i: model(i, labels=i).loss, ids) == (0, [])
    eager, compiled = model, copy.deepcopy(model)
    run = torch.compile(compiled, fullgraph=True)
    losses = {}
    for name, m, fwd in (("eager", eager, eager), ("compiled", compiled, run)):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        losses[name] = []
        for _ in range(2):
            loss = fwd(ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses[name].append(float(loss.detach()))
    assert losses["compiled"][0] == pytest.approx(losses["eager"][0], rel=2e-2)
    np.testing.assert_allclose(losses["compiled"], losses["eager"], rtol=3e-2)
    assert losses["eager"][-1] < losses["eager"][0]  # the steps trained something


def test_patched_model_exports():
    import ropescale.hf as rhf

    model = _tiny_llama().eval()
    rhf.patch(model, ("yarn", 128))
    ids = torch.randint(0, 61, (1, 40), generator=torch.Generator().manual_seed(2))
    ep = torch.export.export(model, (ids,), kwargs={"use_cache": False})
    assert any("ropescale.cos_sin" in str(n.target) for n in ep.graph.nodes)
    with torch.no_grad():
        want = model(ids, use_cache=False).logits
        got = ep.module()(ids, use_cache=False)
    got = got.logits if hasattr(got, "logits") else got[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
