"""Token layouts of the modular tasks and their vocabulary sizes: the one definition that the
config check, the data and the tasks share (no torch)."""

LAYOUTS = ("nanda", "furuta")  # [x, y, =] and [x, op, y]; sequences: grok.data.tokens_for
N_CTX = 3                      # tokens per example in both layouts
# Furuta et al. give each elementary operation its own token so several ops can share one model;
# every other op (polynomials) uses "=". Keyed by the op's canonical form.
FURUTA_OP_TOKENS = {"x+y": 1, "x-y": 2, "xy": 3, "x/y": 4}  # offset from p; "=" is p + 0


def vocab_size(layout: str, p: int) -> int:
    """Input tokens of a layout at modulus p: the residues, then "=" (nanda) or the op tokens."""
    return p + 1 if layout == "nanda" else p + 1 + len(FURUTA_OP_TOKENS)
