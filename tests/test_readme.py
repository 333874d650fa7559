"""The README's Python examples run as written (they cannot rot)."""
import pathlib
import re

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_examples():
    assert BLOCKS


def test_readme_python_examples_run():
    for block in BLOCKS:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)
    # the quick start's last line rotated q in place with the YaRN table
    q = namespace.get("q")
    assert q is not None and q.dtype.name == "float32" and q.shape == (1, 8192, 32, 128)
