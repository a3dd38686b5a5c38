"""An op's group (`op_kind`, seed 002's groups), computed from the parsed polynomial
(`grok.ops.Op`); sympy only ever sees integer monomial dictionaries (never a parsed string).
W&B tags runs by it and the analysis tables group by it.

Groups (`op_kind`), checked in this order:
  division      x/y -> "elementary"; any other division -> "division".
  no cross term (no monomial x^a y^b with a > 0 and b > 0):
                degree 1, exactly the monomials x and y, both coefficients +-1, no constant
                    -> "elementary"  (x+y, x-y, y-x, -x-y)
                any other degree-1 polynomial -> "linear"
                exactly the two monomials c1*x^n and c2*y^n, same n >= 2 -> "sum of powers"
                    (so x^2-y^2 lands here, although it factors; see `is_factorizable`)
                otherwise -> "univariate terms"
  cross term:   the single monomial xy with coefficient 1 -> "elementary"
                `is_factorizable` -> "factorizable"
                multilinear (every monomial has a <= 1 and b <= 1) -> "cross term, degree 1"
                otherwise -> "cross term, degree n"
"""

import sympy

from grok.ops import Op, parse_op

KIND_ORDER = ("elementary", "linear", "cross term, degree 1", "univariate terms",
              "cross term, degree n", "sum of powers", "factorizable", "division")

_X, _Y = sympy.symbols("x y")


def as_op(op) -> Op:
    return parse_op(op) if isinstance(op, str) else op


def monomials(op: Op) -> dict:
    """The numerator as {(a, b): coef}."""
    return {(a, b): c for c, a, b in op.numerator}


def has_cross_term(monos) -> bool:
    return any(a > 0 and b > 0 for a, b in monos)


def is_factorizable(op) -> bool:
    """Whether the (polynomial) op factors over Z into >= 2 non-constant factors, counted with
    multiplicity, each involving both x and y: (x+y)^2, (x-y)^3, x^2-y^2 = (x-y)(x+y) and
    x^3+y^3 = (x+y)(x^2-xy+y^2) are; xy, xy+y = y(x+1) and x^3+xy = x(x^2+y) are not.
    Integer content (2(x+y) = 2 * (x+y)) is not a factor. Divisions are never factorizable."""
    op = as_op(op)
    if op.has_division:
        return False
    poly = sympy.Poly.from_dict(monomials(op), _X, _Y, domain=sympy.ZZ)
    _, factors = poly.factor_list()
    if sum(mult for _, mult in factors) < 2:
        return False
    for f, _ in factors:
        degs = f.degree_list()  # (deg in x, deg in y)
        if degs[0] == 0 or degs[1] == 0:
            return False
    return True


def op_kind(op) -> str:
    """The seed-002 group of an op (one of KIND_ORDER), by the rules in the module docstring."""
    op = as_op(op)
    monos = monomials(op)
    if op.has_division:
        den = {(a, b): c for c, a, b in op.denominator}
        return "elementary" if monos == {(1, 0): 1} and den == {(0, 1): 1} else "division"
    if not has_cross_term(monos):
        if op.degree == 1:
            if set(monos) == {(1, 0), (0, 1)} and all(abs(c) == 1 for c in monos.values()):
                return "elementary"
            return "linear"
        if len(monos) == 2:
            (a1, b1), (a2, b2) = sorted(monos)  # (0, n) sorts before (n, 0)
            if a1 == 0 and b2 == 0 and b1 == a2 >= 2:
                return "sum of powers"
        return "univariate terms"
    if monos == {(1, 1): 1}:
        return "elementary"
    if is_factorizable(op):
        return "factorizable"
    if all(a <= 1 and b <= 1 for a, b in monos):
        return "cross term, degree 1"
    return "cross term, degree n"
