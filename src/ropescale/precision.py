"""An error budget for rotary cos/sin tables: how far common ways of computing them drift with position.

Rotary implementations usually form the angle ``t * theta`` in float32 and
take cos/sin of it; some build the angles as a running product over the pairs
(ggml), some store the table in bfloat16 or float16.  The angle error of a
float32 product grows with ``t * theta`` (about ``t * theta * 2**-24`` rad), so
it is invisible in short tests and large at long context.  This module
measures it against ropescale's tables, whose angles are formed and reduced
exactly in float64 (``csrc/angle.c``; the test-suite checks them against
mpmath), at log-spaced positions up to any maximum.

* :func:`report` compares the built-in strategies (see :data:`STRATEGIES`)
  and any user function ``f(positions, inv_freq) -> (cos, sin)``;
* :func:`check` measures one table someone already has;
* ``ropescale precision`` prints the report (``--plot`` draws it).

Errors are of cos/sin themselves (``max |cos - cos_ref|, |sin - sin_ref|``,
so a bfloat16 table cannot do better than its rounding, ~2e-3) and of the
phase in radians (the angle between ``(cos, sin)`` and the reference,
``atan2`` of their cross and dot products, blind to the table's norm).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _checks
from ._rotary import MAX_ANGLE, cos_sin
from .rope import Rope

__all__ = ["STRATEGIES", "PrecisionReport", "CheckResult", "report", "check", "plot", "sample_positions"]


# -- strategies -----------------------------------------------------------------
def _f32_angles(pos: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``fl32(fl32(t) * fl32(theta))`` (positions are cast to float32 first, as ``position_ids.float()`` does)."""
    return pos.astype(np.float32)[:, None] * theta.astype(np.float32)[None, :]


def _cos_sin_of_f32(a: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """cos/sin of float32 angles, rounded once to float32 (the best a float32 cos can do)."""
    a64 = a.astype(np.float64)
    return np.cos(a64).astype(np.float32), np.sin(a64).astype(np.float32)


def _float32(pos, theta):
    return _cos_sin_of_f32(_f32_angles(pos, theta))


def _float32_running(pos, theta):
    """ggml's loop: the angle of pair k is the float32 angle of pair k-1 times fl32(theta_k / theta_{k-1})."""
    t32 = pos.astype(np.float32)
    th32 = theta.astype(np.float32)
    a = np.empty((pos.shape[0], theta.shape[0]), dtype=np.float32)
    prev = None
    for k in range(theta.shape[0]):
        if theta[k] == 0.0:
            a[:, k] = 0.0
        elif prev is None or theta[prev] == 0.0:
            a[:, k] = t32 * th32[k]
        else:
            a[:, k] = a[:, prev] * np.float32(theta[k] / theta[prev])
        prev = k
    return _cos_sin_of_f32(a)


def _round_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even), returned as float32 values; NumPy only."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def _bfloat16(pos, theta):
    c, s = _float32(pos, theta)
    return _round_bfloat16(c), _round_bfloat16(s)


def _float16(pos, theta):
    c, s = _float32(pos, theta)
    return c.astype(np.float16), s.astype(np.float16)


def _float64(pos, theta):
    a = pos.astype(np.float64)[:, None] * theta[None, :]
    return np.cos(a), np.sin(a)


def _ropescale_float32(pos, theta):
    return cos_sin(pos, theta, dtype=np.float32)


#: Built-in strategies: name -> (function(positions, inv_freq) -> (cos, sin), description).
STRATEGIES: Dict[str, Tuple[Callable, str]] = {
    "float32": (_float32, "float32 t * theta, then cos/sin (transformers, vLLM, flash-attn)"),
    "float32_running": (_float32_running, "float32 angles as a running product over the pairs (ggml)"),
    "bfloat16": (_bfloat16, "float32 angles, table stored in bfloat16"),
    "float16": (_float16, "float32 angles, table stored in float16"),
    "float64": (_float64, "float64 t * theta (rounded product), float64 cos/sin"),
    "ropescale": (_ropescale_float32, "ropescale.cos_sin, float32 table (exact float64 angles, one rounding)"),
}

_StrategyArg = Union[str, Callable, Tuple[str, Callable]]


def _resolve(strategies: Sequence[_StrategyArg]) -> List[Tuple[str, Callable]]:
    if isinstance(strategies, (str, bytes)) or callable(strategies):
        strategies = (strategies,)
    out: List[Tuple[str, Callable]] = []
    for s in strategies:
        if isinstance(s, str):
            if s not in STRATEGIES:
                raise ValueError(f"strategies: unknown strategy {s!r}; known: {', '.join(STRATEGIES)}, "
                                 f"or a function f(positions, inv_freq) -> (cos, sin)")
            out.append((s, STRATEGIES[s][0]))
        elif isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], str) and callable(s[1]):
            out.append((s[0], s[1]))
        elif callable(s):
            out.append((getattr(s, "__name__", "custom"), s))
        else:
            raise TypeError(f"strategies entries must be names, functions or (name, function) pairs, got {s!r}")
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"strategies: names must be distinct, got {names}")
    if not out:
        raise ValueError("strategies must name at least one strategy")
    return out


# -- measuring ------------------------------------------------------------------
def _errors(c: Any, s: Any, c_ref: np.ndarray, s_ref: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per entry: max(|c - c_ref|, |s - s_ref|) and the phase error in radians."""
    c = np.asarray(c, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    err = np.maximum(np.abs(c - c_ref), np.abs(s - s_ref))
    with np.errstate(invalid="ignore"):
        phase = np.abs(np.arctan2(s * c_ref - c * s_ref, c * c_ref + s * s_ref))
    err = np.where(np.isnan(err), np.inf, err)
    phase = np.where(np.isnan(phase), np.inf, phase)
    return err, phase


def sample_positions(max_position: int, per_octave: int = 32, seed: int = 0) -> np.ndarray:
    """Sorted positions in [1, max_position]: each octave [2**j, 2**(j+1)) sampled at its ends and at random.

    Examples
    --------
    >>> p = ropescale.precision.sample_positions(1000, per_octave=4)
    >>> int(p[0]), int(p[-1]), bool(np.all(np.diff(p) > 0))
    (1, 1000, True)
    """
    m = _checks.integer("max_position", max_position, minimum=1, maximum=2**52)
    n = _checks.integer("per_octave", per_octave, minimum=1, maximum=1 << 16)
    rng = np.random.default_rng(seed)
    parts = []
    j = 0
    while (1 << j) <= m:
        lo, hi = 1 << j, min((1 << (j + 1)) - 1, m)
        parts.append(np.array([lo, hi], dtype=np.int64))
        if hi > lo + 1:
            parts.append(rng.integers(lo + 1, hi, size=n, endpoint=False, dtype=np.int64))
        j += 1
    return np.unique(np.concatenate(parts))


def _octave(p: np.ndarray) -> np.ndarray:
    """floor(log2 p) of positive integers, exactly."""
    return np.array([int(v).bit_length() - 1 for v in p], dtype=np.int64)


def _theta_of(rope: Any, max_position: int) -> Tuple[np.ndarray, str]:
    if isinstance(rope, Rope):
        # inv_freq_at ignores the length for methods that do not depend on it (MethodSpec.length_rule)
        theta = rope.inv_freq_at(max_position + 1)[0]
        return np.asarray(theta, dtype=np.float64), repr(rope)
    if isinstance(rope, (str, bytes)) or rope is None or isinstance(rope, (bool, float, int)):
        raise TypeError(f"rope must be a ropescale.Rope or a 1-D array of frequencies, got {rope!r}")
    theta = _checks.asarray("rope", rope)
    if theta.dtype.kind not in "fiu" or theta.ndim != 1 or theta.size == 0:
        raise TypeError(f"rope must be a ropescale.Rope or a non-empty 1-D array of frequencies, "
                        f"got an array of dtype {theta.dtype} and shape {theta.shape}")
    theta = theta.astype(np.float64)
    if not np.all(np.isfinite(theta)):
        raise ValueError("rope: the frequencies must be finite")
    return theta, f"inv_freq of {theta.shape[0]} pairs"


class PrecisionReport:
    """What :func:`report` measured: per sampled position, the worst pair's errors for each strategy.

    Attributes
    ----------
    positions : ndarray of int64, the sampled positions (sorted)
    abs_error, phase_error : dict name -> ndarray over positions (max over pairs)
    strategies : tuple of names; ``descriptions`` for the built-in ones
    rope : str, what was measured; ``max_position``; ``reference_check``: max
        deviation of the reference from mpmath at spot checks (None if not run)
    """

    def __init__(self, rope: str, theta: np.ndarray, max_position: int, positions: np.ndarray,
                 abs_error: Dict[str, np.ndarray], phase_error: Dict[str, np.ndarray],
                 reference_check: Optional[float]):
        self.rope = rope
        self.inv_freq = theta
        self.max_position = max_position
        self.positions = positions
        self.abs_error = abs_error
        self.phase_error = phase_error
        self.strategies = tuple(abs_error)
        self.descriptions = {n: STRATEGIES[n][1] for n in self.strategies if n in STRATEGIES}
        self.reference_check = reference_check

    def max_error(self, name: str, up_to: Optional[int] = None) -> Tuple[float, float]:
        """``(max abs error, max phase error)`` of one strategy over positions ``<= up_to``."""
        mask = self.positions <= (self.max_position if up_to is None else up_to)
        return float(self.abs_error[name][mask].max()), float(self.phase_error[name][mask].max())

    def rows(self) -> List[Dict[str, Any]]:
        """One row per octave ``[2**j, 2**(j+1))``: the worst errors of each strategy there."""
        octs = _octave(self.positions)
        out = []
        for j in np.unique(octs):
            m = octs == j
            row: Dict[str, Any] = {"from": int(1 << int(j)), "to": int(self.positions[m].max())}
            for n in self.strategies:
                row[n] = {"abs": float(self.abs_error[n][m].max()), "phase": float(self.phase_error[n][m].max())}
            out.append(row)
        return out

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: the octave rows, the overall maxima and what was measured."""
        return {
            "rope": self.rope,
            "max_position": self.max_position,
            "strategies": {n: self.descriptions.get(n, "user-supplied") for n in self.strategies},
            "max": {n: dict(zip(("abs", "phase"), self.max_error(n))) for n in self.strategies},
            "octaves": self.rows(),
            "reference_check": self.reference_check,
        }

    def table(self, kind: str = "abs") -> str:
        """Plain-text table, one row per octave, one column per strategy (``kind`` "abs" or "phase")."""
        if kind not in ("abs", "phase"):
            raise ValueError(f"kind must be 'abs' or 'phase', got {kind!r}")
        head = ["positions"] + list(self.strategies)
        body = [[f"{r['from']:,}..{r['to']:,}"] + [f"{r[n][kind]:.2e}" for n in self.strategies] for r in self.rows()]
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in body]
        return "\n".join(lines)

    def __str__(self) -> str:
        parts = [f"cos/sin error of {self.rope}, positions 1..{self.max_position:,} "
                 f"(max over pairs and over the sampled positions of each octave)", ""]
        for n in self.strategies:
            parts.append(f"  {n}: {self.descriptions.get(n, 'user-supplied')}")
        parts += ["", "max |cos - cos_ref|, |sin - sin_ref|:", self.table("abs"), "",
                  "max phase error (radians):", self.table("phase")]
        if self.reference_check is not None:
            parts += ["", f"reference vs mpmath at spot checks: max deviation {self.reference_check:.1e}"]
        return "\n".join(parts)

    def __repr__(self) -> str:
        return f"<PrecisionReport of {self.rope}, {len(self.positions)} positions up to {self.max_position}>"


def _mpmath_spot_check(theta: np.ndarray, positions: np.ndarray, c_ref: np.ndarray, s_ref: np.ndarray,
                       n: int = 24) -> float:
    import mpmath  # optional: only for spot checks

    rng = np.random.default_rng(1)
    rows = rng.integers(0, positions.shape[0], size=n)
    cols = rng.integers(0, theta.shape[0], size=n)
    worst = 0.0
    with mpmath.workdps(40):   # the caller's own mpmath precision is left as it was
        for i, k in zip(rows, cols):
            a = mpmath.mpf(int(positions[i])) * mpmath.mpf(float(theta[k]))
            worst = max(worst, abs(float(mpmath.cos(a)) - c_ref[i, k]), abs(float(mpmath.sin(a)) - s_ref[i, k]))
    return worst


def report(rope: Any, max_position: int, strategies: Sequence[_StrategyArg] = tuple(STRATEGIES), *,
           per_octave: int = 32, spot_check: bool = False) -> PrecisionReport:
    """Measure how far each strategy's cos/sin drift from correctly rounded values, up to ``max_position``.

    Parameters
    ----------
    rope : Rope or array_like of frequencies
        What to measure (a :class:`~ropescale.Rope` uses its scaled
        frequencies; a length-dependent method, such as ``dynamic``, ``longrope`` or
        ``dynamic_yarn``, at ``max_position + 1``).
        The attention factor is left out: errors are of the rotation.
    max_position : int
        Largest position, ``1 <= max_position`` and ``max_position * max(inv_freq) <= 2**34``.
    strategies : sequence
        Names from :data:`STRATEGIES` (default: all), functions
        ``f(positions, inv_freq) -> (cos, sin)`` (positions int64 of shape
        (N,), cos/sin of shape (N, R), any float dtype), or ``(name, f)`` pairs.
    per_octave : int
        Random positions per octave ``[2**j, 2**(j+1))`` besides its two ends.
    spot_check : bool
        Also check the reference itself against mpmath at a few entries
        (needs mpmath); the deviation is in ``reference_check``.

    Returns
    -------
    PrecisionReport

    Examples
    --------
    >>> r = ropescale.precision.report(ropescale.Rope(128), 2**20, ["float32", "ropescale"])
    >>> err32, _ = r.max_error("float32")
    >>> err, _ = r.max_error("ropescale")
    >>> bool(err32 > 1e-2), bool(err < 1e-7)
    (True, True)
    """
    m = _checks.integer("max_position", max_position, minimum=1, maximum=2**52)
    theta, label = _theta_of(rope, m)
    if m * float(np.abs(theta).max()) > MAX_ANGLE:
        raise ValueError(f"max_position * max(inv_freq) must be <= 2**34 radians (the exact range of the reference), "
                         f"got {m} * {float(np.abs(theta).max())!r}")
    chosen = _resolve(strategies)
    spot = _checks.boolean("spot_check", spot_check)
    pos = sample_positions(m, per_octave)
    c_ref, s_ref = cos_sin(pos, theta, dtype=np.float64)
    abs_err, phase_err = {}, {}
    for name, fn in chosen:
        try:
            c, s = fn(pos, theta)
        except Exception as e:  # a user function: say which one failed
            raise ValueError(f"strategy {name!r} failed: {type(e).__name__}: {e}") from e
        c, s = np.asarray(c), np.asarray(s)
        if c.shape != c_ref.shape or s.shape != c_ref.shape:
            raise ValueError(f"strategy {name!r} must return cos and sin of shape {c_ref.shape}, "
                             f"got {c.shape} and {s.shape}")
        e, ph = _errors(c, s, c_ref, s_ref)
        abs_err[name], phase_err[name] = e.max(axis=1), ph.max(axis=1)
    ref_check = _mpmath_spot_check(theta, pos, c_ref, s_ref) if spot else None
    return PrecisionReport(label, theta, m, pos, abs_err, phase_err, ref_check)


class CheckResult:
    """What :func:`check` found: the worst deviation, where it is, and per position.

    Attributes
    ----------
    max_abs_error, max_phase_error : float
    worst_abs, worst_phase : (index, pair): where they occur (index into ``positions``, flattened)
    worst_abs_position, worst_phase_position : the positions there
    abs_error, phase_error : ndarray, the positions' shape, max over pairs
    """

    def __init__(self, positions: np.ndarray, err: np.ndarray, phase: np.ndarray):
        flat_e, flat_p = err.reshape(-1, err.shape[-1]), phase.reshape(-1, phase.shape[-1])
        pos = positions.reshape(-1)
        self.abs_error = err.max(axis=-1) if err.size else np.zeros(positions.shape)
        self.phase_error = phase.max(axis=-1) if phase.size else np.zeros(positions.shape)
        if flat_e.size:
            ia = np.unravel_index(int(np.argmax(flat_e)), flat_e.shape)
            ip = np.unravel_index(int(np.argmax(flat_p)), flat_p.shape)
            self.max_abs_error, self.max_phase_error = float(flat_e[ia]), float(flat_p[ip])
            self.worst_abs, self.worst_phase = (int(ia[0]), int(ia[1])), (int(ip[0]), int(ip[1]))
            self.worst_abs_position, self.worst_phase_position = pos[ia[0]].item(), pos[ip[0]].item()
        else:
            self.max_abs_error = self.max_phase_error = 0.0
            self.worst_abs = self.worst_phase = None
            self.worst_abs_position = self.worst_phase_position = None

    def __repr__(self) -> str:
        return (f"CheckResult(max_abs_error={self.max_abs_error:.3g} at position {self.worst_abs_position} "
                f"pair {None if self.worst_abs is None else self.worst_abs[1]}, "
                f"max_phase_error={self.max_phase_error:.3g} rad at position {self.worst_phase_position} "
                f"pair {None if self.worst_phase is None else self.worst_phase[1]})")


def check(cos: Any, sin: Any, positions: Any, inv_freq: Any, *, attention_factor: Optional[float] = None) -> CheckResult:
    """Measure a cos/sin table someone built against correctly rounded values.

    Parameters
    ----------
    cos, sin : array_like, shape ``positions.shape + (R,)``, any float dtype
        The table to check (e.g. a model's cached ``cos``/``sin``, converted to NumPy).
    positions : array_like of int or float
        The positions of its rows.
    inv_freq : Rope or array_like, shape (R,)
        The frequencies it should have used; a :class:`~ropescale.Rope` also
        gives the attention factor the table is expected to include.
    attention_factor : float, optional
        The factor the table includes (default 1, or the Rope's).

    Returns
    -------
    CheckResult

    Examples
    --------
    >>> theta = ropescale.inv_freq(64, 10000.0)
    >>> pos = np.arange(0, 2**20, 4099)
    >>> ang = pos.astype(np.float32)[:, None] * theta.astype(np.float32)   # a float32 table
    >>> res = ropescale.precision.check(np.cos(ang), np.sin(ang), pos, theta)
    >>> bool(res.max_phase_error > 1e-3), bool(res.worst_phase_position > 2**19)   # worst far out
    (True, True)
    """
    if isinstance(inv_freq, Rope):
        # as Rope.cos_sin: dynamic and longrope at max(positions) + 1
        theta, attn = inv_freq._for_positions(positions, None)
        if attention_factor is None:
            attention_factor = attn
    else:
        theta = inv_freq
    a = 1.0 if attention_factor is None else _checks.real("attention_factor", attention_factor, above=0.0)
    c_ref, s_ref = cos_sin(positions, theta, attention_factor=a, dtype=np.float64)
    c = _checks.asarray("cos", cos)
    s = _checks.asarray("sin", sin)
    for name, arr in (("cos", c), ("sin", s)):
        if arr.dtype.kind not in "fiu" and not (arr.dtype.kind == "V" or "bfloat16" in str(arr.dtype)):
            raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
        if arr.shape != c_ref.shape:
            raise ValueError(f"{name} must have shape positions.shape + (R,) = {c_ref.shape}, got {arr.shape}")
    err, phase = _errors(c.astype(np.float64), s.astype(np.float64), c_ref, s_ref)
    return CheckResult(np.asarray(positions), err, phase)


# -- drawing --------------------------------------------------------------------
def plot(rep: PrecisionReport, ax: Any = None):
    """Log-log plot of each strategy's error against position (needs matplotlib).

    Two panels, cos/sin error and phase error, one line per strategy; zero
    errors are drawn at the bottom of the axis.  Returns the figure.
    """
    if not isinstance(rep, PrecisionReport):
        raise TypeError(f"rep must be a PrecisionReport (from ropescale.precision.report), got {type(rep).__name__}")
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install \".[plot]\" in a ropescale clone") from None
    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    else:
        axes = ax
        fig = axes[0].figure
    floor = 1e-18
    for panel, (data, title) in zip(axes, ((rep.abs_error, "max |cos/sin error|"),
                                           (rep.phase_error, "max phase error (rad)"))):
        for name in rep.strategies:
            panel.loglog(rep.positions, np.maximum(data[name], floor), label=name, lw=1.2)
        panel.set_xlabel("position")
        panel.set_title(title)
        panel.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{rep.rope}, positions up to {rep.max_position:,}", fontsize=9)
    return fig


# -- command line ---------------------------------------------------------------
def add_arguments(p) -> None:
    """The options of ``ropescale precision`` (the parser comes from :mod:`ropescale.cli`)."""
    p.add_argument("--dim", type=int, default=None, help="head dimension (default 128)")
    p.add_argument("--base", type=float, default=None, help="rope_theta (default 10000)")
    p.add_argument("--hf", metavar="CONFIG", default=None, help="measure a model's rope from its config.json")
    p.add_argument("--max-position", type=int, default=2**20, metavar="N", help="largest position (default 2**20)")
    p.add_argument("--strategies", default=",".join(STRATEGIES), metavar="A,B",
                   help="comma-separated, from: " + ", ".join(STRATEGIES))
    p.add_argument("--per-octave", type=int, default=32, metavar="N", help="random positions per octave (default 32)")
    p.add_argument("--plot", metavar="FILE", default=None, help="also save a log-log plot of error vs position")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")


def run_cli(args) -> int:
    """Run ``ropescale precision`` with parsed ``args``; ValueError/TypeError for bad input."""
    import json

    if args.hf is not None:
        if args.dim is not None or args.base is not None:
            raise ValueError("--hf reads dim and base from the config; do not combine it with --dim/--base")
        rope = Rope.from_hf(args.hf)
    else:
        rope = Rope(128 if args.dim is None else args.dim, 10000.0 if args.base is None else args.base)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    rep = report(rope, args.max_position, names, per_octave=args.per_octave)
    if args.plot is not None:
        fig = plot(rep)
        fig.savefig(args.plot, dpi=120)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        print(rep)
        if args.plot is not None:
            print(f"\nPlot saved to {args.plot}")
    return 0
