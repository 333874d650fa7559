"""The optional extras install beside other releases, and a missing one says which extra to install."""
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

_BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
sys.meta_path.insert(0, _NoTorch())
"""


@pytest.mark.parametrize("module", ["ropescale.torch", "ropescale.hf"])
def test_importing_a_torch_module_without_torch_names_the_extra(module):
    code = _BLOCK_TORCH + f"""
import ropescale  # the core imports without torch
try:
    import {module}
except ImportError as e:
    print("ImportError:", e)
else:
    print("imported")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ImportError:"), out.stdout
    assert '".[torch]"' in out.stdout or '".[hf]"' in out.stdout, out.stdout


def _extras():
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def test_extras_use_ranges_not_pins():
    for extra, reqs in _extras().items():
        for req in reqs:
            spec = req.split(";")[0]  # an environment marker may compare with ==
            assert "==" not in spec, f"extra {extra!r} pins {req!r}: pins go in .ci/constraints.txt"


def test_extras_needing_a_newer_python_carry_a_marker():
    # transformers 5 requires Python >= 3.10; the project allows older (requires-python)
    for extra, reqs in _extras().items():
        for req in reqs:
            if re.match(r"transformers\b", req):
                assert "python_version >= '3.10'" in req, (extra, req)


def test_the_torch_floor_is_the_release_with_the_apis_used():
    import ropescale  # the installed package in CI (no src/ there)

    src = (pathlib.Path(ropescale.__file__).parent / "torch.py").read_text(encoding="utf-8")
    floor = re.search(r'torch>=([\d.]+)', " ".join(_extras()["torch"])).group(1)
    assert floor == "2.4"
    # torch.library.custom_op, register_fake and register_autograd appeared in 2.4
    for api in ("torch.library.custom_op", ".register_fake", ".register_autograd"):
        assert api in src
