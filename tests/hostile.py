"""Hostile inputs as hypothesis strategies, shared by the tests of the parsers."""

from __future__ import annotations

from hypothesis import strategies as st

from evtkit._headers import KNOWN

HEXES = st.text("0123456789abcdefABCDEF-xz", min_size=1, max_size=3)


def traceparents() -> st.SearchStrategy[str]:
    """W3C traceparent values, valid and nearly valid: 55 characters mostly."""
    piece = st.sampled_from(["0", "f", "a", "F", "-", "x"])
    valid = st.tuples(st.sampled_from(["00", "01", "ff", "0g"]),
                      st.text("0123456789abcdef", min_size=32, max_size=32),
                      st.text("0123456789abcdef", min_size=16, max_size=16),
                      st.sampled_from(["00", "01", "03", "0f", "10", "zz"]))
    shaped = valid.map(lambda v: "-".join(v))
    zeros = st.just("00-" + "0" * 32 + "-" + "1" * 16 + "-01")
    mutated = st.tuples(shaped, st.integers(0, 54), piece).map(
        lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + 1:])
    return st.one_of(shaped, zeros, mutated)


_digits = st.integers(0, 99).map("{:02d}".format)
# RFC 3339 shapes with fields in and out of range: any case of T and Z, offsets, fractions
# of 1 to 9 digits, years a trace cannot hold.
rfc3339 = st.builds(
    "{}-{}-{}{}{}:{}:{}{}{}".format,
    st.one_of(st.integers(0, 9999).map("{:04d}".format), st.sampled_from(["1677", "2262"])),
    _digits, _digits, st.sampled_from("Tt"), _digits, _digits, _digits,
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9).map(".{}".format)),
    st.one_of(st.sampled_from("Zz"), st.builds("{}{}:{}".format, st.sampled_from("+-"),
                                               _digits, _digits)),
)
# Header lines built from pieces that stress the parser: known names in odd cases,
# blanks, colons, stray CR/LF, non-UTF-8 bytes.
names = st.one_of(
    st.sampled_from(KNOWN).map(lambda n: n.encode()),
    st.sampled_from(KNOWN).map(lambda n: n.upper().encode()),
    st.binary(max_size=12),
    st.sampled_from([b"", b" ce-id", b"ce-id ", b"X-Other", b"ce\rid", b"\xff"]),
)
values = st.one_of(
    st.binary(max_size=40),
    st.one_of(traceparents(), rfc3339).map(str.encode),
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"  ", b" \t x \t ", b"\xc3", b"a:b", b"00-" + b"a" * 32]),
)
lines = st.one_of(
    st.tuples(names, values).map(lambda kv: kv[0] + b":" + kv[1]),
    st.binary(max_size=20),
)
blocks = st.one_of(
    st.none(),
    st.lists(lines, max_size=8).map(lambda ls: b"NATS/1.0\r\n" + b"\r\n".join(ls) + b"\r\n\r\n"),
    st.binary(max_size=80),
)
