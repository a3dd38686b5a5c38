"""Binary ops f(x, y) mod p typed by users, parsed without eval into exact integer polynomials.

Grammar (spaces between tokens are ignored):
    op      := ['-'] term (('+'|'-') term)*            a polynomial
             | ['-'] side '/' divisor                  one division, dividing the whole op
    side    := term without '/' (or a parenthesised group)
    divisor := factor factor*                          juxtaposition only: x/2y, x/xy, x/(x+y)
    term    := factor (['*'] factor)*                  juxtaposed factors must start with x, y or '('
    factor  := atom [('^'|'**') INT]
    atom    := INT | ('x'|'y')[INT] | '(' ['-'] term (('+'|'-') term)* ')'
Digits written directly after a variable are its exponent: x2y = x^2*y.

Bounds (each refused with a one-line OpError): degree <= MAX_DEGREE, coefficients <= MAX_COEF_BITS
bits, literals <= MAX_DIGITS digits, parentheses nested <= MAX_NESTING deep, ops <= MAX_CHARS
characters (so parsing stays recursive-descent without ever nearing Python's recursion limit), and
2 <= p <= MAX_P (`check_p`).
"""

import functools
from dataclasses import dataclass

import numpy as np

MAX_DEGREE = 64          # beyond this a "binary op" is a typo, and expansion would get slow
MAX_COEF_BITS = 4096     # keeps ((9^64)^64)^64-style inputs from stalling the parser
MAX_DIGITS = 1000        # int() refuses very long literals anyway; say so clearly first
MAX_NESTING = 50         # parentheses deep; a recursive-descent parser would hit Python's limit near 250
MAX_CHARS = 100_000      # parsing is linear in the length; this keeps it well under a second
# The largest modulus. The dataset is all p*p pairs and the progress measures run the model on
# the p x p grid, so a run's memory grows like p^3 (logits over p classes for each of p^2 pairs):
# at p = 2048 and frac 0.3 one training step needs ~80 GB. Up to MAX_P the label table (p*p
# int64) that checks an op costs ~0.2 GB and under a second (degree <= 7) to a few seconds
# (degree 64); what a run may use is bounded separately by train.max_memory_gb (grok.config).
MAX_P = 2048


class OpError(ValueError):
    """Any problem with a user's op or p; the message is one line quoting the op."""


# A polynomial is a dict {(a, b): coef} meaning sum coef * x^a * y^b, zero coefs absent.

def _deg(poly):
    return max((a + b for a, b in poly), default=0)


def _key(mono):
    a, b = mono
    return (-(a + b), -a)


def _terms(poly):
    return tuple((poly[m], m[0], m[1]) for m in sorted(poly, key=_key))


def _fmt_poly(terms):
    out = []
    for i, (c, a, b) in enumerate(terms):
        mono = ("x" if a == 1 else f"x^{a}" if a else "") + ("y" if b == 1 else f"y^{b}" if b else "")
        coef = str(abs(c)) if abs(c) != 1 or not mono else ""
        sign = ("-" if c < 0 else "+") if i else ("-" if c < 0 else "")
        out.append(sign + coef + mono)
    return "".join(out)


def _wrap(terms):
    """Parenthesise a multi-term side of a division so the canonical form parses back."""
    return f"({_fmt_poly(terms)})" if len(terms) > 1 else _fmt_poly(terms)


@dataclass(frozen=True)
class Op:
    """A parsed op: `canonical` identifies the function independently of spelling and of p."""
    source: str
    canonical: str
    pretty: str
    numerator: tuple
    denominator: tuple | None

    @property
    def has_division(self) -> bool:
        return self.denominator is not None

    @property
    def degree(self) -> int:
        return max((a + b for _, a, b in self.numerator), default=0)

    def check_p(self, p) -> None:
        """2 <= p <= MAX_P; division needs inverses, which exist for every nonzero residue only
        when p is prime."""
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 2:
            raise OpError(f"bad p {p!r} for op {self.source!r}: p must be an integer >= 2")
        if p > MAX_P:
            raise OpError(f"bad p {int(p)} for op {self.source!r}: p must be at most {MAX_P} "
                          f"(a run trains on all p*p pairs and needs memory growing like p^3)")
        if self.has_division and not _is_prime(int(p)):
            raise OpError(f"bad p {int(p)} for op {self.source!r}: division needs a prime p, "
                          f"and {int(p)} is composite")

    def labels(self, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, z) int64 over all pairs, x-major; pairs whose divisor is 0 mod p are dropped.

        Powers come from Python's pow(v, a, p) and every product is reduced mod p before the next,
        so values stay below p^2 < 2^62 and the labels are exact.
        """
        self.check_p(p)
        p = int(p)
        z, keep = _label_grid(self.numerator, self.denominator, p)
        xs, ys = np.nonzero(keep)  # row-major, so x-major order
        if len(xs) == 0:
            raise OpError(f"bad p {p} for op {self.source!r}: the divisor is 0 mod {p} "
                          f"for every pair, so there is nothing to label")
        return xs.astype(np.int64), ys.astype(np.int64), z[keep].astype(np.int64)

    def check_learnable(self, p) -> int:
        """The number of labelled pairs at p, after checking that the op is a binary op mod p
        worth learning: its labels are not all equal, and they depend on x and on y (on the pairs
        where it is defined). Polynomials that differ as integer polynomials can agree mod p
        (x^p = x on Z_p, 23x = 0 mod 23), so this is decided on the exact label table, O(p^2).
        Cached per (op, p): a sweep checks each op once."""
        self.check_p(p)
        n, problem = _learnability(self.numerator, self.denominator, int(p))
        if n == 0:
            self.labels(p)  # raises: nothing to label
        if problem:
            raise OpError(f"op={self.source}: {problem}")
        return n


def _label_grid(numerator, denominator, p):
    """(z, keep): the labels on the p x p grid (x rows, y columns) and where they are defined."""
    z = _grid(numerator, p)
    keep = np.ones((p, p), dtype=bool)
    if denominator is not None:
        d = _grid(denominator, p)
        keep = d != 0
        inv = np.array([0] + [pow(v, -1, p) for v in range(1, p)], dtype=np.int64)
        z = z * inv[d] % p
    return z, keep


@functools.lru_cache(maxsize=1024)
def _learnability(numerator, denominator, p) -> tuple[int, str | None]:
    """(number of labelled pairs, what makes the op unlearnable mod p or None)."""
    z, keep = _label_grid(numerator, denominator, p)
    n = int(keep.sum())
    if n == 0:
        return 0, None
    labels = z[keep]
    if labels.min() == labels.max():
        return n, f"constant mod p={p} (every label is {labels[0]})"
    hi = np.where(keep, z, -1)
    lo = np.where(keep, z, p)
    # Depends on x iff some column (one y) holds two different labels; on y, some row.
    if not (hi.max(axis=0) > lo.min(axis=0)).any():
        return n, f"does not depend on x mod p={p} (every label is a function of y alone)"
    if not (hi.max(axis=1) > lo.min(axis=1)).any():
        return n, f"does not depend on y mod p={p} (every label is a function of x alone)"
    return n, None


def _grid(terms, p):
    """f(x, y) mod p for the p x p grid: per power of x, the polynomial in y as a vector over y
    (one pass over the terms), then one outer product per power of x, every product reduced mod
    p before the next (values stay below p^2)."""
    vals = range(p)
    table = {}
    for _, a, b in terms:
        for e in (a, b):
            if e not in table:
                table[e] = np.array([pow(v, e, p) for v in vals], dtype=np.int64)
    in_y = {}
    for c, a, b in terms:
        row = in_y.get(a, np.zeros(p, dtype=np.int64))
        in_y[a] = (row + table[b] * (c % p)) % p
    z = np.zeros((p, p), dtype=np.int64)
    for a, row in in_y.items():
        z = (z + table[a][:, None] * row[None, :] % p) % p
    return z


def _is_prime(n):
    """Deterministic for any size (sympy: trial division, then strong tests proven for n < 2^64,
    BPSW beyond); sympy is imported only when a division op asks."""
    import sympy

    return bool(sympy.isprime(n))


class _Tok:
    __slots__ = ("kind", "text", "pos", "value", "exp")

    def __init__(self, kind, text, pos, value=None, exp=None):
        self.kind, self.text, self.pos, self.value, self.exp = kind, text, pos, value, exp


_OPS = "+-*/^"


class _Parser:
    def __init__(self, src):
        self.src = src
        if len(src) > MAX_CHARS:  # quoting all of it would not help
            raise OpError(f"bad op {src[:40]!r}... of {len(src)} characters: an op may have at most "
                          f"{MAX_CHARS}")
        self.toks = self._tokenize(src)
        self.i = 0
        self.depth = 0

    def fail(self, msg):
        raise OpError(f"bad op {self.src!r}: {msg}")

    # -- tokens -----------------------------------------------------------------------------

    def _digits(self, s, i):
        j = i
        while j < len(s) and s[j] in "0123456789":
            j += 1
        if j < len(s) and s[j] == ".":
            k = j + 1
            while k < len(s) and s[k] in "0123456789":
                k += 1
            self.fail(f"decimal number {s[i:k]!r} at position {i}; only integers are allowed")
        if j - i > MAX_DIGITS:
            self.fail(f"number at position {i} has more than {MAX_DIGITS} digits")
        return j

    def _tokenize(self, s):
        toks, i = [], 0
        while i < len(s):
            c = s[i]
            if c.isspace():
                i += 1
            elif c in "0123456789":
                j = self._digits(s, i)
                toks.append(_Tok("num", s[i:j], i, value=int(s[i:j])))
                i = j
            elif c in "xy":
                j = self._digits(s, i + 1)
                exp = int(s[i + 1:j]) if j > i + 1 else None
                toks.append(_Tok("var", s[i:j], i, value=c, exp=exp))
                i = j
            elif s.startswith("**", i):
                toks.append(_Tok("^", "**", i))
                i += 2
            elif c in _OPS or c in "()":
                toks.append(_Tok(c, c, i))
                i += 1
            elif c == "." and s[i + 1:i + 2].isdigit():
                self._digits(s, i)
            else:
                j = i + 1
                if c.isalpha():
                    while j < len(s) and (s[j].isalpha() or s[j] == "_"):
                        j += 1
                self.fail(f"unknown symbol {s[i:j]!r} at position {i} (only x, y, integers, "
                          f"+ - * / ^ ** and parentheses are allowed)")
        toks.append(_Tok("end", "", len(s)))
        return toks

    def peek(self):
        return self.toks[self.i]

    def take(self):
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def unexpected(self, tok):
        prev = self.toks[self.i - 1] if self.i else None
        if tok.kind == "end":
            if prev is None:
                self.fail("empty op")
            if prev.kind == "(":
                self.fail(f"unbalanced '(' at position {prev.pos}")
            self.fail(f"op ends with operator {prev.text!r}")
        if tok.kind == ")" and prev is not None and prev.kind == "(":
            self.fail(f"empty parentheses '()' at position {prev.pos}")
        if prev is None:
            self.fail(f"op starts with operator {tok.text!r}")
        if prev.kind in _OPS:
            self.fail(f"operator {prev.text!r} followed by {tok.text!r} at position {tok.pos}")
        if tok.kind == "-":
            self.fail(f"unary minus at position {tok.pos} is only allowed at the start or "
                      f"right after '('")
        self.fail(f"unexpected {tok.text!r} at position {tok.pos}")

    # -- polynomial arithmetic with the caps enforced --------------------------------------

    def mul(self, f, g, pos):
        if _deg(f) + _deg(g) > MAX_DEGREE:
            self.fail(f"degree {_deg(f) + _deg(g)} at position {pos} exceeds the maximum "
                      f"{MAX_DEGREE}")
        out = {}
        for (a, b), c in f.items():
            for (a2, b2), c2 in g.items():
                m = (a + a2, b + b2)
                out[m] = out.get(m, 0) + c * c2
        out = {m: c for m, c in out.items() if c}
        if any(abs(c).bit_length() > MAX_COEF_BITS for c in out.values()):
            self.fail(f"coefficients at position {pos} exceed {MAX_COEF_BITS} bits")
        return out

    @staticmethod
    def add(f, g, sign):
        out = dict(f)
        for m, c in g.items():
            out[m] = out.get(m, 0) + sign * c
        return {m: c for m, c in out.items() if c}

    def power(self, f, n, pos):
        if n > MAX_DEGREE or _deg(f) * n > MAX_DEGREE:
            self.fail(f"power {n} at position {pos} gives degree above the maximum {MAX_DEGREE}"
                      if _deg(f) else f"exponent {n} at position {pos} exceeds {MAX_DEGREE}")
        out = {(0, 0): 1}
        for _ in range(n):
            out = self.mul(out, f, pos)
        return out

    # -- grammar -----------------------------------------------------------------------------

    def parse(self):
        num, single = self.sum()
        tok = self.peek()
        if tok.kind == "/":
            if not single:
                self.fail(f"'/' at position {tok.pos} must divide the whole op; "
                          f"parenthesise the numerator, e.g. (x+y)/y")
            self.take()
            den = self.divisor()
            tok = self.peek()
            if tok.kind == "/":
                self.fail(f"more than one division (second '/' at position {tok.pos})")
            if tok.kind in "+-*":
                self.fail(f"{tok.text!r} at position {tok.pos} after a divisor is ambiguous; "
                          f"parenthesise the numerator and the divisor, e.g. (x+y)/(x-y)")
            if tok.kind != "end":
                self.unexpected(tok)
            return num, den
        if tok.kind == ")":
            self.fail(f"unbalanced ')' at position {tok.pos}")
        if tok.kind != "end":
            self.unexpected(tok)
        return num, None

    def sum(self):
        """Returns the polynomial and whether it was a single term (so may be divided)."""
        sign = 1
        if self.peek().kind == "-":
            self.take()
            sign = -1
        poly = self.add({}, self.term(), sign)
        single = True
        while self.peek().kind in "+-":
            sign = 1 if self.take().kind == "+" else -1
            poly = self.add(poly, self.term(), sign)
            single = False
        return poly, single

    def term(self):
        f = self.factor()
        while True:
            tok = self.peek()
            if tok.kind == "*":
                self.take()
                f = self.mul(f, self.factor(), tok.pos)
            elif tok.kind in ("var", "("):
                f = self.mul(f, self.factor(), tok.pos)
            elif tok.kind == "num":
                self.fail(f"number {tok.text!r} at position {tok.pos} follows a factor; "
                          f"write the coefficient first (2x) or use '*'")
            else:
                return f

    def divisor(self):
        f = self.factor()
        while self.peek().kind in ("var", "("):
            tok = self.peek()
            f = self.mul(f, self.factor(), tok.pos)
        if self.peek().kind == "num":
            tok = self.peek()
            self.fail(f"number {tok.text!r} at position {tok.pos} follows a factor; "
                      f"write the coefficient first (2x) or use '*'")
        if not f:
            self.fail("division by an expression that is identically zero")
        return f

    def factor(self):
        tok = self.peek()
        base = self.atom()
        if self.peek().kind != "^":
            return base
        hat = self.take()
        if tok.kind == "var" and tok.exp is not None:
            self.fail(f"{tok.text!r} already has exponent {tok.exp}; write ({tok.text})^n "
                      f"to raise it again")
        n = self.peek()
        if n.kind != "num":
            if n.kind == "end":
                self.unexpected(n)
            self.fail(f"exponent at position {n.pos} must be a non-negative integer literal, "
                      f"got {n.text!r}")
        self.take()
        if self.peek().kind == "^":
            self.fail(f"chained powers at position {self.peek().pos} are ambiguous; "
                      f"use parentheses")
        return self.power(base, n.value, hat.pos)

    def atom(self):
        tok = self.peek()
        if tok.kind == "num":
            self.take()
            return {(0, 0): tok.value} if tok.value else {}
        if tok.kind == "var":
            self.take()
            e = 1 if tok.exp is None else tok.exp
            if e > MAX_DEGREE:
                self.fail(f"exponent {e} of {tok.text!r} exceeds the maximum degree {MAX_DEGREE}")
            return {(e, 0) if tok.value == "x" else (0, e): 1}
        if tok.kind == "(":
            self.take()
            if self.peek().kind == ")":
                self.unexpected(self.peek())
            self.depth += 1
            if self.depth > MAX_NESTING:
                self.fail(f"parentheses nested more than {MAX_NESTING} deep at position {tok.pos}")
            poly, _ = self.sum()
            self.depth -= 1
            close = self.peek()
            if close.kind == "/":
                self.fail(f"division at position {close.pos} inside parentheses; '/' may only "
                          f"divide the whole op")
            if close.kind == "end":
                self.fail(f"unbalanced '(' at position {tok.pos}")
            if close.kind != ")":
                self.unexpected(close)
            self.take()
            return poly
        self.unexpected(tok)

    def pretty(self):
        """The user's spelling with '**' as '^', variable digits as '^n', and '*' dropped where
        juxtaposition means the same thing."""
        out = []
        for tok, nxt in zip(self.toks, self.toks[1:]):
            if tok.kind == "var":
                out.append(tok.value + ("" if tok.exp is None else f"^{tok.exp}"))
            elif tok.kind == "num":
                out.append(str(tok.value))
            elif tok.kind == "*":
                out.append("" if nxt.kind in ("var", "(") else "*")
            else:
                out.append("^" if tok.kind == "^" else tok.text)
        return "".join(out)


def _proportional(f, g):
    """Whether f = c*g for a rational c, i.e. f/g is a constant function."""
    if set(f) != set(g):
        return False
    m0 = next(iter(g))
    return all(f[m] * g[m0] == g[m] * f[m0] for m in g)


def parse_op(text) -> Op:
    """Parse a user's op; any problem is an OpError with a one-line message quoting the input."""
    if not isinstance(text, str):
        raise OpError(f"bad op {text!r}: expected a string like 'x+y', got {type(text).__name__}"
                      f" (quote it on the command line, e.g. op='x*y')")
    if not text.strip():
        raise OpError(f"bad op {text!r}: empty op")
    parser = _Parser(text)
    num, den = parser.parse()
    if den is not None:
        if set(den) == {(0, 0)} and abs(den[(0, 0)]) == 1:  # x/1 and x/-1 need no inverse
            num, den = parser.add({}, num, den[(0, 0)]), None
        elif den[min(den, key=_key)] < 0:  # a positive leading divisor coefficient
            num, den = parser.add({}, num, -1), parser.add({}, den, -1)
    if (_deg(num) == 0) if den is None else (not num or _proportional(num, den)):
        parser.fail("it reduces to a constant, which is not a learnable binary op")
    n_terms = _terms(num)
    d_terms = None if den is None else _terms(den)
    canonical = _fmt_poly(n_terms)
    if d_terms is not None:
        canonical = _wrap(n_terms) + "/" + _wrap(d_terms)
    return Op(source=text, canonical=canonical, pretty=parser.pretty(), numerator=n_terms,
              denominator=d_terms)
