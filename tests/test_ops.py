"""The op parser must agree with plain Python-integer arithmetic for every spelling users type."""

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from grok.ops import MAX_DEGREE, Op, OpError, parse_op

PRIMES = [2, 3, 5, 7, 11, 13, 59, 97, 113]
COMPOSITES = [4, 6, 9, 15, 91]
PROPERTY = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

ACCEPTED = ["x2+xy+y2", "x**2+x*y+y**2", "x^2+xy+y^2", "(x+y)^3", "(x+y)**3", "2x+3y", "x3+xy2+y",
            "x/y", "x*y", "x-y", "x+y", "2x-3y", "xy+x+y", "x^2-y^2", "(x-y)^4", "(x+y)^2+x+y",
            "x^3+2y", "x2y", "-x+y", "x+y+1", " ( x + y ) ^ 2 ", "3(x+y)", "x(x+y)", "(x+y)/y",
            "x/2y", "-x/y", "(x-y)/(x+y)", "2 x * y"]


def oracle(num, den, p):
    """Labels by direct big-int evaluation, the slow obviously-right way."""
    xs, ys, zs = [], [], []
    for x in range(p):
        for y in range(p):
            n = sum(c * x**a * y**b for c, a, b in num)
            if den is not None:
                d = sum(c * x**a * y**b for c, a, b in den) % p
                if d == 0:
                    continue
                n *= pow(d, -1, p)
            xs.append(x)
            ys.append(y)
            zs.append(n % p)
    return xs, ys, zs


def assert_labels(op, num, den, p):
    x, y, z = op.labels(p)
    assert x.dtype == y.dtype == z.dtype == np.int64
    ex, ey, ez = oracle(num, den, p)
    assert (x.tolist(), y.tolist(), z.tolist()) == (ex, ey, ez)


def assert_round_trips(op):
    """canonical and pretty are themselves valid ops naming the same function."""
    assert parse_op(op.canonical).canonical == op.canonical
    assert parse_op(op.pretty).canonical == op.canonical


@pytest.mark.parametrize("text", ACCEPTED)
def test_accepted_spellings_parse(text):
    op = parse_op(text)
    assert op.source == text
    assert_round_trips(op)


@pytest.mark.parametrize("spellings, canonical", [
    (["x2+xy+y2", "x**2+x*y+y**2", "x^2+xy+y^2", "y2+yx+x2", "x x + x y + y y"], "x^2+xy+y^2"),
    (["(x+y)^2", "(x+y)**2", "(x+y)(y+x)", "x2+2xy+y2"], "x^2+2xy+y^2"),
    (["x*y", "xy", "yx", "x1y1"], "xy"),
    (["x3+xy2+y", "y+xy^2+x^3"], "x^3+xy^2+y"),
    (["-x+y", "y-x", "-(x-y)"], "-x+y"),
    (["2x-3y", "2*x-3*y", "x+x-y-2y"], "2x-3y"),
    (["x^2-y^2", "(x+y)(x-y)"], "x^2-y^2"),
    (["x+y+1", "1+y+x"], "x+y+1"),
    (["x/y", "x / y", "(x)/(y)", "(-x)/(-y)"], "x/y"),
    (["(x+y)/y", "(y+x)/(y)"], "(x+y)/y"),
    (["x/(2y)", "x/2y", "x/(y+y)"], "x/2y"),
])
def test_equal_functions_share_canonical(spellings, canonical):
    assert {parse_op(s).canonical for s in spellings} == {canonical}


@pytest.mark.parametrize("text, pretty", [
    ("x2+xy+y2", "x^2+xy+y^2"), ("x**2+x*y+y**2", "x^2+xy+y^2"), ("(x+y)^3", "(x+y)^3"),
    ("(x + y) ** 3", "(x+y)^3"), ("2*x*(x+y)", "2x(x+y)"), ("x*2", "x*2"), ("x^2*3", "x^2*3"),
])
def test_pretty_keeps_the_users_shape(text, pretty):
    assert parse_op(text).pretty == pretty


def test_fields_describe_the_expansion():
    op = parse_op("(x+y)^7")
    assert op.numerator == tuple((c, 7 - k, k) for k, c in
                                 enumerate([1, 7, 21, 35, 35, 21, 7, 1]))
    assert op.denominator is None and not op.has_division and op.degree == 7
    div = parse_op("(x+y)/(x-y)")
    assert div.numerator == ((1, 1, 0), (1, 0, 1)) and div.denominator == ((1, 1, 0), (-1, 0, 1))
    assert div.has_division and div.degree == 1
    assert parse_op("x2y+3").numerator == ((1, 2, 1), (3, 0, 0))
    assert isinstance(op, Op)


def test_large_exponents_stay_exact():
    """Values like 112^64 or 10^29 overflow int64 many times over; the labels must not notice."""
    op = parse_op(f"x^{MAX_DEGREE}+y^{MAX_DEGREE - 1}x-123456789012345678901234567890y")
    assert_labels(op, op.numerator, None, 113)


def test_x_minus_y_order_by_hand():
    x, y, z = parse_op("x-y").labels(5)
    assert x.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5 + [4] * 5
    assert y.tolist() == [0, 1, 2, 3, 4] * 5
    assert z.tolist() == [0, 4, 3, 2, 1,
                          1, 0, 4, 3, 2,
                          2, 1, 0, 4, 3,
                          3, 2, 1, 0, 4,
                          4, 3, 2, 1, 0]


def test_division_drops_zero_divisors():
    x, y, z = parse_op("x/y").labels(7)
    assert len(x) == len(y) == len(z) == 42
    assert 0 not in y.tolist()
    assert ((z * y) % 7 == x).all()


def test_labels_fast_enough():
    op = parse_op("(x+y)^7")
    best = min(_timed(op.labels, 113) for _ in range(3))
    assert best < 0.1


def _timed(f, *args):
    t = time.perf_counter()
    f(*args)
    return time.perf_counter() - t


BAD_OPS = [
    "", "   ", "x+z", "x$y", "sin(x)", "X+y", "x²", "x+", "*x", "+x", "x++y", "x**", "x^^2",
    "x* *2", "--x", "x*-y", "(x+y", "x+y)", "((x)", "()", "x()", "x^y", "x^-1", "x^2.5",
    "x^(2)", "1.5x", ".5x", "x2.0", f"x^{MAX_DEGREE + 1}", "(x+y)^100", "x^40y^40",
    "9" * 5000 + "x", "((9^64)^64)^64x", "x-x", "3", "0x+5", "x^0", "x/y/x", "x/(y/x)",
    "(x/y)+1", "x+y/y", "x/y+1", "x/y*x", "x/(y-y)", "x/0", "x/x", "2x/x", "(2x+2y)/(x+y)",
    "x 2", "(x+y)2", "x2^3", "x^2^3", "x\ny+z",
]


@pytest.mark.parametrize("text", BAD_OPS)
def test_bad_ops_raise_one_line_naming_the_op(text):
    with pytest.raises(OpError) as err:
        parse_op(text)
    msg = str(err.value)
    assert "\n" not in msg and repr(text) in msg


@pytest.mark.parametrize("value", [1.5, 3, True, None, ["x+y"]])
def test_non_string_ops_are_named(value):
    with pytest.raises(OpError, match="expected a string") as err:
        parse_op(value)
    assert repr(value) in str(err.value)


@pytest.mark.parametrize("text, needle", [
    ("x+z", "unknown symbol 'z' at position 2"), ("x/(y-y)", "identically zero"),
    ("x-x", "constant"), ("(x+y", "unbalanced"), ("x+y)", "unbalanced"), ("()", "empty"),
    ("x^y", "non-negative integer"), ("1.5x", "decimal"), ("(x+y)^100", "maximum"),
    ("x/y/x", "more than one division"), ("x/(y/x)", "inside parentheses"), ("", "empty"),
])
def test_error_messages_say_what_is_wrong(text, needle):
    with pytest.raises(OpError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_op(text)


def test_division_needs_prime_p():
    op = parse_op("x/y")
    with pytest.raises(OpError, match="prime") as err:
        op.check_p(91)
    assert "91" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(OpError, match="prime"):
        op.labels(91)
    op.check_p(97)
    parse_op("x*y").check_p(91)  # no inverses needed, so composite p is fine


@pytest.mark.parametrize("p", [1, 0, -7, 2.0, "7", True, None])
def test_bad_p(p):
    with pytest.raises(OpError, match="p must be an integer"):
        parse_op("x+y").check_p(p)


def test_numpy_int_p_is_accepted():
    assert len(parse_op("x+y").labels(np.int64(5))[2]) == 25


def test_all_pairs_dropped_is_an_error():
    with pytest.raises(OpError, match="nothing to label"):
        parse_op("x/2").labels(2)


# -- property tests against direct evaluation ---------------------------------------------

term = st.tuples(st.integers(-9, 9), st.integers(0, 5), st.integers(0, 5))


@st.composite
def rendered_poly(draw):
    """A random polynomial and one of the many ways a user might type it."""
    terms = draw(st.lists(term, min_size=1, max_size=5))
    parts = []
    for i, (c, a, b) in enumerate(terms):
        factors = [_render_var(draw, v, e) for v, e in (("x", a), ("y", b)) if e or draw(st.booleans())]
        if draw(st.booleans()):
            factors.reverse()
        if abs(c) != 1 or not factors or draw(st.booleans()):
            factors.insert(0, str(abs(c)))
        text = factors[0]
        for f in factors[1:]:  # juxtaposition only reads as a product before x, y or '('
            text += draw(st.sampled_from(["", "*"])) if f[0] in "xy" else "*"
            text += f
        sign = "-" if c < 0 else "+"
        parts.append((sign if i else sign.replace("+", "")) + text)
    return terms, draw(st.sampled_from(["", " "])).join(parts)


def _render_var(draw, v, e):
    if e == 1:
        return draw(st.sampled_from([v, f"{v}^1", f"{v}1"]))
    return draw(st.sampled_from([f"{v}{e}", f"{v}^{e}", f"{v}**{e}"]))


def _merged(terms):
    coefs = {}
    for c, a, b in terms:
        coefs[a, b] = coefs.get((a, b), 0) + c
    return [(c, a, b) for (a, b), c in coefs.items() if c]


@PROPERTY
@given(rendered_poly(), st.lists(st.sampled_from(PRIMES + COMPOSITES), min_size=1, max_size=3))
def test_polynomials_match_direct_evaluation(poly, ps):
    terms, text = poly
    if all(a == b == 0 for _, a, b in _merged(terms)):
        with pytest.raises(OpError, match="constant"):
            parse_op(text)
        return
    op = parse_op(text)
    assert_round_trips(op)
    assert op.degree == max(a + b for c, a, b in op.numerator)
    for p in ps:
        assert_labels(op, terms, None, p)


@PROPERTY
@given(st.integers(-9, 9), st.integers(-9, 9), st.integers(1, 7),
       st.sampled_from(PRIMES + COMPOSITES), st.sampled_from(["^", "**"]))
def test_linear_powers_match_direct_evaluation(a, b, n, p, hat):
    assume(a or b)
    text = f"({a}x{'-' if b < 0 else '+'}{abs(b)}y){hat}{n}"
    op = parse_op(text)
    assert op.degree == n
    assert sum(c for c, _, _ in op.numerator) == (a + b) ** n
    x, y, z = op.labels(p)
    assert z.tolist() == [pow(a * x + b * y, n, p) for x in range(p) for y in range(p)]


@PROPERTY
@given(rendered_poly(), rendered_poly(), st.sampled_from(PRIMES))
def test_division_matches_modular_inverse(num, den, p):
    (n_terms, n_text), (d_terms, d_text) = num, den
    assume(_merged(d_terms))
    text = f"({n_text})/({d_text})"
    ex, ey, ez = oracle(n_terms, d_terms, p)
    try:
        op = parse_op(text)
    except OpError as err:  # only when N/D is a constant function
        assert "constant" in str(err)
        assert len(set(oracle(n_terms, d_terms, 113)[2])) <= 1
        return
    assert_round_trips(op)
    if not ex:
        with pytest.raises(OpError, match="nothing to label"):
            op.labels(p)
        return
    assert_labels(op, n_terms, d_terms, p)
