"""The formula grammar (study 3, issue 27): masks admit exactly the completable sequences, canonical keys identify
algebraically equal formulas (and only those), the named initialisers are points of the space with their textbook
values, invalid candidates are detectable, and bad input fails in one line naming the parameter."""
import math
import subprocess
import sys

import numpy as np
import pytest

from rlinit_lib.core.params import ParameterError
from rlinit_lib.formula_search.grammar import (KNOWN, PRIMITIVES, Formula, Grammar, known, mutate, parse,
                                               random_formula)

FANS = [(784, 256), (256, 256), (256, 64), (64, 10)]
EQUAL = [("sqrt(2)/sqrt(fan_in)", "sqrt(2/fan_in)"), ("(fan_in + fan_out)/2", "fan_in/2 + fan_out/2"),
         ("sqrt(2/(fan_in + fan_out))", "1/sqrt((fan_in + fan_out)/2)"), ("g/sqrt(fan_in*L)", "g/(sqrt(fan_in)*sqrt(L))"),
         ("1/(1/fan_in + 1/fan_out)", "fan_in*fan_out/(fan_in + fan_out)"),
         ("square(fan_in + fan_out)", "square(fan_in) + 2*fan_in*fan_out + square(fan_out)"),
         ("sqrt(square(fan_in))", "fan_in"), ("g*sqrt(1/fan_in)", "g/sqrt(fan_in)"), ("sqrt(g*g/fan_in)", "g/sqrt(fan_in)"),
         ("(l + 1)/(l*L) - 1/L", "1/(l*L)"), ("fan_in**-0.5", "1/sqrt(fan_in)/1")]
DIFFERENT = ["sqrt(2/fan_in)", "sqrt(1/fan_in)", "sqrt(2/fan_out)", "sqrt(2/(fan_in + fan_out))", "g/sqrt(fan_in)",
             "g/sqrt(fan_in*L)", "g/sqrt(fan_in*l)", "fan_in", "fan_out", "2", "1/2"]
TOL = 8 * np.finfo(np.float64).eps   # a few float64 roundings (one sqrt, one division)


def walk_is_legal(grammar, tokens):
    return all(grammar.legal_mask(tokens[:i])[grammar.vocabulary.index(t)] for i, t in enumerate(tokens))


def test_mask_admits_exactly_the_completable_prefixes():
    g = Grammar(max_length=4)
    assert g.legal_mask([]).all()                                   # 4 tokens leave room for any first token
    after = dict(zip(g.vocabulary, Grammar(max_length=3).legal_mask(["+", "fan_in"])))  # 2 of 3 used, 1 needed: a leaf
    assert all(after[t] == (PRIMITIVES[t] == 0) for t in g.vocabulary)
    assert not g.legal_mask(["fan_in"]).any() and g.is_complete(["fan_in"]) and not g.is_complete(["+", "g"])
    one = Grammar(max_length=1)
    assert [t for t, ok in zip(one.vocabulary, one.legal_mask([])) if ok] == list(one.terminals + one.constants)
    # brute force on a tiny grammar: a token is legal iff some completion within max_length exists
    tiny = Grammar(operators=("+", "sqrt"), terminals=("fan_in",), constants=(), max_length=5)

    def completable(prefix):
        if tiny.is_complete(prefix):
            return True
        return len(prefix) < tiny.max_length and any(completable(prefix + [t]) for t in tiny.vocabulary)

    for prefix in ([], ["+"], ["+", "sqrt"], ["sqrt", "sqrt", "+"], ["+", "+"]):
        assert [completable(prefix + [t]) for t in tiny.vocabulary] == list(tiny.legal_mask(prefix))


def test_random_walks_complete_within_bound_and_give_finite_sympy_expressions():
    grammar, rng = Grammar(), np.random.default_rng(0)
    valid = 0
    for _ in range(300):
        f = random_formula(grammar, rng)
        assert 1 <= len(f.tokens) <= grammar.max_length and grammar.is_complete(list(f.tokens))
        assert walk_is_legal(grammar, f.tokens) and parse(f.text).tokens == f.tokens   # text reads back
        sigma = f.per_layer(FANS, math.sqrt(2))
        assert sigma.shape == (len(FANS),) and np.all(np.isnan(sigma) | (np.isfinite(sigma) & (sigma > 0)))
        valid += f.valid_for(FANS, math.sqrt(2))
        child = mutate(f, grammar, rng)
        assert len(child.tokens) <= grammar.max_length and walk_is_legal(grammar, child.tokens)
    assert 200 < valid < 300   # most are valid, some (e.g. fan_in - fan_out) are not


def test_canonical_keys_identify_equal_formulas_and_only_those():
    for a, b in EQUAL:
        assert parse(a).canonical == parse(b).canonical, (a, b)
        assert parse(a).tokens != parse(b).tokens
    keys = [parse(t).canonical for t in DIFFERENT]
    assert len(set(keys)) == len(keys)
    he = parse(KNOWN["he"])
    assert Formula(he.tokens, "uniform").canonical != he.canonical   # the distribution is part of the key


def test_canonical_keys_do_not_depend_on_the_process():
    texts = [a for a, _ in EQUAL] + DIFFERENT
    code = ("import sys; from rlinit_lib.formula_search.grammar import parse; "
            "print('\\n'.join(parse(t).canonical for t in sys.argv[1:]))")
    runs = [subprocess.run([sys.executable, "-c", code, *texts], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")]
    assert runs[0] == runs[1] == "\n".join(parse(t).canonical for t in texts) + "\n"


def test_known_initialisers_are_reachable_and_give_textbook_values():
    grammar = Grammar()
    for name, f in known(grammar).items():   # parse with the grammar: its vocabulary and max_length
        assert grammar.contains(f) and walk_is_legal(grammar, f.tokens), name
    k = known()
    assert abs(k["he"].sigma(256, 10, 1, 3, 1.0) - math.sqrt(2 / 256)) <= TOL * math.sqrt(2 / 256)
    assert k["lecun"].sigma(256, 10, 1, 3, 1.0) == 1 / 16
    assert abs(k["xavier"].sigma(300, 100, 1, 3, 1.0) - math.sqrt(2 / 400)) <= TOL * math.sqrt(2 / 400)
    assert k["he_gain"].canonical == parse("sqrt(2)/sqrt(fan_in)").canonical.replace("sqrt(2)", "g")
    assert abs(k["he_gain"].sigma(256, 10, 1, 3, math.sqrt(2)) - math.sqrt(2 / 256)) <= TOL * math.sqrt(2 / 256)
    assert abs(k["depth_scaled"].sigma(64, 10, 2, 4, 2.0) - 2 / 16) <= TOL
    sig = k["he"].per_layer(FANS, 1.0)
    np.testing.assert_allclose(sig, [math.sqrt(2 / fi) for fi, _ in FANS], rtol=TOL)
    layers = parse("l/L").per_layer(FANS, 1.0)   # l counts from 1 to L
    np.testing.assert_allclose(layers, [1 / 4, 2 / 4, 3 / 4, 1.0], rtol=TOL)


def test_invalid_candidates_are_detected_not_raised():
    for text in ("fan_in - fan_in", "fan_out - fan_in", "1/(fan_in - fan_in)", "sqrt(fan_out - fan_in)",
                 "square(" * 9 + "fan_in" + ")" * 9):
        f = parse(text)
        assert not f.valid_for(FANS, 1.0), text
        assert np.isnan(f.per_layer(FANS, 1.0)).any()
    assert parse("fan_in - fan_out").valid_for([(10, 5)], 1.0)   # valid on one network, not on another
    assert not parse("fan_in - fan_out").valid_for([(5, 10)], 1.0)


@pytest.mark.parametrize("call, name", [
    (lambda: Grammar(operators=()), "operators"), (lambda: Grammar(operators=("+", "exp")), "operators"),
    (lambda: Grammar(terminals=("fan_in", "depth")), "terminals"), (lambda: Grammar(constants=("7",)), "constants"),
    (lambda: Grammar(max_length=0), "max_length"), (lambda: Grammar(max_length=10**6), "max_length"),
    (lambda: Grammar(terminals=(), constants=()), "terminals"), (lambda: Grammar(distributions=("laplace",)), "distributions"),
    (lambda: Grammar().legal_mask(["exp"]), "prefix"), (lambda: parse("exp(fan_in)"), "formula"),
    (lambda: parse("fan_in**5"), "formula"), (lambda: parse("7/fan_in"), "formula"), (lambda: parse("depth"), "formula"),
    (lambda: parse("g/sqrt(fan_in*L)", Grammar(max_length=5)), "formula"),
    (lambda: parse("sqrt(2/fan_in)", Grammar(operators=("/",))), "formula"),
    (lambda: Formula(("+", "fan_in")), "tokens"), (lambda: Formula(("fan_in",), "laplace"), "distribution"),
    (lambda: parse("fan_in").per_layer([], 1.0), "fans"), (lambda: parse("fan_in").per_layer([(0, 3)], 1.0), "fans"),
    (lambda: parse("fan_in").per_layer([(3, 3)], -1.0), "g"),
])
def test_bad_input_fails_in_one_line_naming_the_parameter(call, name):
    with pytest.raises(ParameterError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and message.startswith(name), message
