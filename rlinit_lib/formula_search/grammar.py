"""The search space of study 3: per-layer initialisation formulas as token sequences, canonicalised with sympy.

A formula gives weight layer ``l``'s standard deviation ``sigma_l = f(fan_in, fan_out, l, L, g)`` (``l`` counts
weight layers from 1, ``L`` is their number, ``g`` the activation's gain, e.g. sqrt(2) for ReLU, as in
``initialisation.theory``). It is written in prefix (Polish) notation over a vocabulary of operators (binary
``+ - * /``; unary ``sqrt``, ``square``, ``cube``: powers 1/2, 2 and 3), the five inputs and a few constants, so
that a controller can emit it token by token: :meth:`Grammar.legal_mask` says which tokens can still complete the
sequence within ``max_length`` (arity bookkeeping: a prefix needs ``k`` more operands; a token of arity ``a``
leaves ``k - 1 + a``, and the sequence can complete only if that many leaves still fit). This is the search space
of the Swish search (Ramachandran et al. 2017, "Searching for activation functions", an RNN controller emitting
a formula's tokens) and of the symbolic-regression literature (Petersen et al. 2021, "Deep symbolic regression",
prefix tokens sampled under a mask), here for the initialisation formulas the dissertation's Sec. 6.4 asks for.

Every candidate is reduced to one canonical form with sympy (all inputs declared positive; ``simplify``, then
``powsimp`` and ``factor``), printed as a string: algebraically equal formulas such as ``sqrt(2)/sqrt(fan_in)`` and
``sqrt(2/fan_in)`` get the same :attr:`Formula.canonical` key, so the study trains them once and lists them once.
The key does not depend on the process (sympy orders terms by its own sort keys, not by hashes; a test runs two
hash seeds). A distribution other than the default ``normal`` (``uniform``, ``orthogonal``) is a field of the
formula, appended to the key. ``sigma`` evaluates the canonical expression with ``sympy.lambdify`` (NumPy); a
value that is NaN, infinite, complex or <= 0 on some layer makes the candidate invalid for that network
(:meth:`Formula.valid_for`), which the study scores by its one rule for diverged runs.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np
import sympy

from rlinit_lib.core.params import ParameterError, check_choice, check_float, check_int

SYMBOLS = {name: sympy.Symbol(name, positive=True) for name in ("fan_in", "fan_out", "l", "L", "g")}
TERMINALS = tuple(SYMBOLS)
OPERATORS = {"+": 2, "-": 2, "*": 2, "/": 2, "sqrt": 1, "square": 1, "cube": 1}   # name -> arity
POWERS = {"sqrt": Fraction(1, 2), "square": Fraction(2), "cube": Fraction(3)}
CONSTANTS = {"1": Fraction(1), "2": Fraction(2), "3": Fraction(3), "1/2": Fraction(1, 2)}
DISTRIBUTIONS = ("normal", "uniform", "orthogonal")
PRIMITIVES = {**OPERATORS, **{t: 0 for t in TERMINALS}, **{c: 0 for c in CONSTANTS}}
MAX_LENGTH = 64   # the longest token sequence: a bound that protects sympy's run time

# Named points of the space (the initialisers people use); each is reachable with the default grammar (tested).
KNOWN = {
    "he": "sqrt(2/fan_in)",                       # He et al. 2015, ReLU
    "lecun": "sqrt(1/fan_in)",                    # LeCun et al. 1998
    "xavier": "sqrt(2/(fan_in + fan_out))",       # Glorot & Bengio 2010, normal form
    "he_fan_out": "sqrt(2/fan_out)",              # He et al. 2015, backward (fan_out) mode
    "he_gain": "g/sqrt(fan_in)",                  # PyTorch's kaiming_normal_ with the activation's gain
    "xavier_gain": "g*sqrt(2/(fan_in + fan_out))",  # PyTorch's xavier_normal_ with the activation's gain
    "depth_scaled": "g/sqrt(fan_in*L)",           # residual-style 1/sqrt(L) damping (Fixup-like)
}


def _names(name: str, value, known: dict | tuple, allow_empty: bool) -> tuple:
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
        raise ParameterError(f"{name} must be a {'' if allow_empty else 'non-empty '}list of {', '.join(known)} "
                             f"(got {value!r})")
    for v in value:
        if v not in known:
            raise ParameterError(f"{name}: unknown primitive {v!r}; known: {', '.join(known)}")
    if len(set(value)) != len(value):
        raise ParameterError(f"{name} must not repeat a value (got {list(value)!r})")
    return tuple(value)


@dataclass(frozen=True)
class Grammar:
    """The vocabulary (operators, then terminals, then constants) and the length bound of the search space."""

    operators: tuple = ("+", "-", "*", "/", "sqrt", "square")
    terminals: tuple = TERMINALS
    constants: tuple = ("1", "2", "3", "1/2")
    max_length: int = 12
    distributions: tuple = ("normal",)

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        set_("operators", _names("operators", self.operators, OPERATORS, allow_empty=False))
        set_("terminals", _names("terminals", self.terminals, TERMINALS, allow_empty=True))
        set_("constants", _names("constants", self.constants, CONSTANTS, allow_empty=True))
        set_("distributions", _names("distributions", self.distributions, DISTRIBUTIONS, allow_empty=False))
        if not self.terminals and not self.constants:
            raise ParameterError("terminals and constants must not both be empty (a formula needs a leaf)")
        check_int("max_length", self.max_length, low=1, high=MAX_LENGTH)
        set_("max_length", int(self.max_length))

    @property
    def vocabulary(self) -> tuple:
        return self.operators + self.terminals + self.constants

    @functools.cached_property
    def arities(self) -> np.ndarray:
        return np.array([PRIMITIVES[t] for t in self.vocabulary])

    def to_dict(self) -> dict:
        """Plain data (lists, int) for a run's identity and a searcher's state."""
        return {"operators": list(self.operators), "terminals": list(self.terminals),
                "constants": list(self.constants), "max_length": self.max_length,
                "distributions": list(self.distributions)}

    @classmethod
    def from_dict(cls, d: dict) -> "Grammar":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def _needed(self, prefix: Sequence[str]) -> int:
        """Operands the prefix still needs (0: complete); ParameterError for foreign or trailing tokens."""
        needed = 1
        for t in prefix:
            if t not in self.vocabulary:
                raise ParameterError(f"prefix: token {t!r} is not in the grammar's vocabulary")
            if needed == 0:
                raise ParameterError(f"prefix: tokens after a complete formula ({list(prefix)!r})")
            needed += PRIMITIVES[t] - 1
        return needed

    def legal_mask(self, prefix: Sequence[str]) -> np.ndarray:
        """Boolean mask over :attr:`vocabulary`: exactly the tokens after which the sequence can still complete
        within ``max_length`` (all False once the prefix is complete)."""
        return self._mask(self._needed(prefix), len(prefix), self.max_length)

    def _mask(self, needed: int, used: int, limit: int) -> np.ndarray:
        if needed == 0:
            return np.zeros(len(self.vocabulary), dtype=bool)
        # after a token of arity a, needed - 1 + a leaves complete the sequence: used + 1 + needed - 1 + a <= limit
        return self.arities <= limit - used - needed

    def is_complete(self, prefix: Sequence[str]) -> bool:
        return len(prefix) > 0 and self._needed(prefix) == 0

    def contains(self, formula: "Formula") -> bool:
        """Whether the grammar can emit this formula's tokens (vocabulary, length bound) and its distribution."""
        return (all(t in self.vocabulary for t in formula.tokens) and len(formula.tokens) <= self.max_length
                and formula.distribution in self.distributions)


# ---- formulas: tokens -> sympy -> canonical key -> numbers ----

def _subtree_end(tokens: Sequence[str], start: int) -> int:
    """Index after the subtree that starts at ``start``."""
    needed, i = 1, start
    while needed:
        needed += PRIMITIVES[tokens[i]] - 1
        i += 1
    return i


def _to_sympy(tokens: Sequence[str], i: int = 0):
    t = tokens[i]
    if t in SYMBOLS:
        return SYMBOLS[t], i + 1
    if t in CONSTANTS:
        c = CONSTANTS[t]
        return sympy.Rational(c.numerator, c.denominator), i + 1
    a, j = _to_sympy(tokens, i + 1)
    if t in POWERS:
        p = POWERS[t]
        return a ** sympy.Rational(p.numerator, p.denominator), j
    b, k = _to_sympy(tokens, j)
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[t], k


@functools.lru_cache(maxsize=100_000)
def _expression(tokens: tuple):
    return _to_sympy(tokens)[0]


@functools.lru_cache(maxsize=100_000)
def _canonical(tokens: tuple):
    expr = _expression(tokens)
    if _degenerate(expr):
        return sympy.nan
    return sympy.factor(sympy.powsimp(sympy.simplify(expr), force=True))


def _degenerate(expr) -> bool:
    return bool(expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo, sympy.I))


@functools.lru_cache(maxsize=100_000)
def _function(tokens: tuple):
    expr = _canonical(tokens)
    if _degenerate(expr):
        return None
    return sympy.lambdify([SYMBOLS[s] for s in TERMINALS], expr, modules="numpy")


PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def _infix(tokens: Sequence[str], i: int = 0) -> tuple[str, int]:
    """Infix text that :func:`parse` reads back to the same tokens (left-associative parentheses)."""
    t = tokens[i]
    if PRIMITIVES[t] == 0:
        return ("0.5" if t == "1/2" else t), i + 1
    a, j = _infix(tokens, i + 1)
    if t in POWERS:
        return f"{t}({a})", j
    b, k = _infix(tokens, j)
    prec = lambda pos: PRECEDENCE.get(tokens[pos], 3)   # noqa: E731
    a = f"({a})" if prec(i + 1) < PRECEDENCE[t] else a
    b = f"({b})" if prec(j) <= PRECEDENCE[t] else b
    return f"{a} {t} {b}", k


@dataclass(frozen=True)
class Formula:
    """A complete prefix token sequence and the distribution its weights are drawn from."""

    tokens: tuple
    distribution: str = "normal"

    def __post_init__(self):
        tokens = tuple(self.tokens)
        object.__setattr__(self, "tokens", tokens)
        check_choice("distribution", self.distribution, DISTRIBUTIONS)
        if not tokens or any(t not in PRIMITIVES for t in tokens):
            raise ParameterError(f"tokens must be a non-empty sequence of {', '.join(PRIMITIVES)} (got {tokens!r})")
        needed = 1
        for n, t in enumerate(tokens):
            needed += PRIMITIVES[t] - 1
            if needed == 0 and n != len(tokens) - 1:
                break
        if needed != 0 or n != len(tokens) - 1:
            raise ParameterError(f"tokens must be one complete prefix formula (got {list(tokens)!r})")

    @property
    def expression(self):
        """The sympy expression as written (sympy's automatic evaluation only)."""
        return _expression(self.tokens)

    @property
    def canonical_expression(self):
        """The canonical sympy expression (``nan`` for a formula with a division by zero)."""
        return _canonical(self.tokens)

    @property
    def canonical(self) -> str:
        """The key: equal formulas (and the same distribution) give the same string."""
        key = str(self.canonical_expression)
        return key if self.distribution == "normal" else f"{key} | {self.distribution}"

    @property
    def text(self) -> str:
        """Infix, as the tokens write it, e.g. ``sqrt(2 / fan_in)``."""
        return _infix(self.tokens)[0]

    def __str__(self) -> str:
        return self.text if self.distribution == "normal" else f"{self.text} | {self.distribution}"

    def sigma(self, fan_in, fan_out, l, L, g):
        """``f(fan_in, fan_out, l, L, g)`` as float (or an array for array inputs); NaN where not a positive
        real number (complex, infinite, zero or negative values, divisions by zero)."""
        args = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (fan_in, fan_out, l, L, g)))
        fn = _function(self.tokens)
        with np.errstate(all="ignore"):
            out = np.full(args[0].shape, np.nan) if fn is None else np.broadcast_to(fn(*args), args[0].shape)
            out = np.asarray(out)
            if np.iscomplexobj(out):
                out = np.where(out.imag == 0, out.real, np.nan)
            out = np.where(np.isfinite(out) & (out > 0), out.astype(np.float64), np.nan)
        return float(out) if out.ndim == 0 else out

    def per_layer(self, fans: Sequence[Sequence[int]], g: float) -> np.ndarray:
        """One sigma per weight layer of a network with these ``(fan_in, fan_out)`` (layer l = 1..L)."""
        fans = _check_fans(fans)
        check_float("g", g, low=0.0, low_open=True)
        L = len(fans)
        return np.atleast_1d(self.sigma(fans[:, 0], fans[:, 1], np.arange(1, L + 1), L, g))

    def valid_for(self, fans: Sequence[Sequence[int]], g: float) -> bool:
        """Whether every layer's sigma is a finite positive real number."""
        return bool(np.all(np.isfinite(self.per_layer(fans, g))))

    def to_dict(self) -> dict:
        return {"tokens": list(self.tokens), "distribution": self.distribution}

    @classmethod
    def from_dict(cls, d: dict) -> "Formula":
        return cls(tuple(d["tokens"]), d.get("distribution", "normal"))


def _check_fans(fans) -> np.ndarray:
    arr = np.asarray(fans, dtype=np.float64) if isinstance(fans, (list, tuple, np.ndarray)) else np.zeros((0, 0))
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != 2 or not np.all(arr >= 1) \
            or not np.all(arr == np.round(arr)):
        raise ParameterError(f"fans must be a non-empty list of (fan_in, fan_out) pairs of integers >= 1 (got {fans!r})")
    return arr


# ---- human-written formulas ----

def _number(node) -> Fraction | None:
    """A numeric literal, a negated one, or a ratio of them (``0.5``, ``-1``, ``1/2``); None otherwise."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(node.value).limit_denominator(1000)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        a, b = _number(node.left), _number(node.right)
        return None if a is None or b is None or b == 0 else a / b
    return None


def _tokens_of(node, text: str) -> list[str]:
    bad = lambda why: ParameterError(f"formula {text!r}: {why}")   # noqa: E731
    if isinstance(node, ast.Name):
        if node.id not in SYMBOLS:
            raise bad(f"unknown name {node.id!r}; inputs are {', '.join(TERMINALS)}")
        return [node.id]
    if isinstance(node, ast.Constant):
        value = _number(node)
        token = next((c for c, v in CONSTANTS.items() if v == value), None)
        if token is None:
            raise bad(f"constant {node.value!r} is not one of {', '.join(CONSTANTS)}")
        return [token]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in POWERS and len(node.args) == 1:
        return [node.func.id] + _tokens_of(node.args[0], text)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        p = _number(node.right)
        base = _tokens_of(node.left, text)
        for name, power in POWERS.items():
            if p == power:
                return [name] + base
            if p == -power:
                return ["/", "1"] + ([] if power == 1 else [name]) + base
        if p == -1:
            return ["/", "1"] + base
        raise bad(f"exponent {ast.unparse(node.right)} is not one of 1/2, 2, 3 (or their negatives, or -1)")
    ops = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
    if isinstance(node, ast.BinOp) and type(node.op) in ops:
        return [ops[type(node.op)]] + _tokens_of(node.left, text) + _tokens_of(node.right, text)
    raise bad(f"cannot read {ast.unparse(node)!r} (use + - * / ** sqrt square cube, {', '.join(TERMINALS)}, numbers)")


def parse(text: str, grammar: Grammar | None = None, distribution: str = "normal") -> Formula:
    """A human-written formula, e.g. ``"sqrt(2/fan_in)"``, as a :class:`Formula` whose tokens follow the text's
    structure. With ``grammar``, the tokens must be its vocabulary and fit its ``max_length``."""
    if not isinstance(text, str) or not text.strip():
        raise ParameterError(f"formula must be a non-empty string (got {text!r})")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ParameterError(f"formula {text!r} is not an expression") from None
    formula = Formula(tuple(_tokens_of(tree, text)), distribution)
    if grammar is not None:
        foreign = [t for t in formula.tokens if t not in grammar.vocabulary]
        if foreign:
            raise ParameterError(f"formula {text!r} uses {foreign[0]!r}, not in the grammar's vocabulary")
        if len(formula.tokens) > grammar.max_length:
            raise ParameterError(f"formula {text!r} needs {len(formula.tokens)} tokens, more than max_length="
                                 f"{grammar.max_length}")
        check_choice("distribution", distribution, grammar.distributions)
    return formula


def known(grammar: Grammar | None = None) -> dict[str, Formula]:
    """The :data:`KNOWN` points as formulas (checked against ``grammar`` when given)."""
    return {name: parse(text, grammar) for name, text in KNOWN.items()}


# ---- random formulas and mutations (random search, evolution) ----

def _random_tokens(grammar: Grammar, rng: np.random.Generator, limit: int) -> list[str]:
    """A complete subtree of at most ``limit`` tokens, each drawn uniformly from the legal ones."""
    tokens, needed = [], 1
    while needed:
        legal = np.flatnonzero(grammar._mask(needed, len(tokens), limit))
        t = grammar.vocabulary[int(legal[rng.integers(len(legal))])]
        tokens.append(t)
        needed += PRIMITIVES[t] - 1
    return tokens


def _random_distribution(grammar: Grammar, rng: np.random.Generator) -> str:
    ds = grammar.distributions
    return ds[0] if len(ds) == 1 else ds[int(rng.integers(len(ds)))]


def random_formula(grammar: Grammar, rng: np.random.Generator) -> Formula:
    """Tokens drawn left to right, uniformly among the legal ones (the mask keeps within ``max_length``)."""
    return Formula(tuple(_random_tokens(grammar, rng, grammar.max_length)), _random_distribution(grammar, rng))


def mutate(formula: Formula, grammar: Grammar, rng: np.random.Generator, tries: int = 10) -> Formula:
    """Replace a random subtree by a random one (the length bound kept), or, when the grammar has several
    distributions, sometimes redraw the distribution; a few tries for a sequence that differs from the parent."""
    if not grammar.contains(formula):
        raise ParameterError(f"formula {formula} is not in the grammar (vocabulary, max_length, distribution)")
    tokens = list(formula.tokens)
    sites = len(tokens) + (len(grammar.distributions) > 1)
    for _ in range(tries):
        i = int(rng.integers(sites))
        if i == len(tokens):
            child = Formula(formula.tokens, _random_distribution(grammar, rng))
        else:
            end = _subtree_end(tokens, i)
            room = grammar.max_length - (len(tokens) - (end - i))
            child = Formula(tuple(tokens[:i] + _random_tokens(grammar, rng, room) + tokens[end:]), formula.distribution)
        if child != formula:
            return child
    return child
