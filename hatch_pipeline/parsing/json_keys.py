"""Whether NDJSON text may hold an object key outside a known set: regular expressions, run by polars.

This is the cheap guard that lets the parser learn a file's columns from its first part instead of inferring a
schema over every line (which costs about as much as reading the file). Every key of a JSON object follows `{` or
`,` and comes before `:`, with optional whitespace around it. Two expressions find such a key unless it is one of
the known names, so text neither matches holds no other key, at any depth:

- the compact one matches a key written with no whitespace around it (`,"name":`, as most writers write them);
- the spaced one also matches a key with whitespace around it, but it runs only on text that holds whitespace next
  to a quote the way such a key does (`<ws>"...":` or `"<ws>:`). Compact JSON holds neither outside its strings,
  and inside them only where a quote is followed by whitespace and a colon, so compact text is searched by the
  quick expression alone: the spaced one runs at less than half its speed, as whitespace and commas, frequent in
  text, all start a candidate.

They may also match where there is no key (a string value ending in a comma, followed by a key) or at the key of
a nested object: the caller then infers the keys exactly. They never miss one.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, TypeAlias

import polars as pl

__all__ = ["KeySearch", "key_search", "may_hold_other_keys"]

_SPACE: Final = r"[ \t\r\n]"
"""A JSON whitespace character."""
_CHAR: Final = r'(?:[^"\\]|\\.)'
"""One character of a JSON string as written: anything but a quote or a backslash, or an escape."""
_SPACED_KEY: Final = rf'(?s){_SPACE}"{_CHAR}*"{_SPACE}*:|"{_SPACE}+:'
"""Whitespace before a key's opening quote, or between its closing quote and the colon: every key that is not
compact holds one of the two (a string value ending in a space holds the first's start but no colon after it),
and the pairs of characters they start with are rare, so polars skips to the candidates."""
_NAME: Final = re.compile(r"[A-Za-z0-9_]+")
_LINE: Final = "line"

_Trie: TypeAlias = dict[str, "_Trie"]
"""The known names, a character per level; the key "" marks the end of a name."""


@dataclass(frozen=True)
class KeySearch:
    """The expressions (Rust syntax, as polars runs them) for a key that is none of a known set."""

    compact: str
    """A key with no whitespace around it."""
    spaced: str
    """A key with or without whitespace around it."""


def key_search(known: Collection[str]) -> KeySearch:
    """The search for keys other than `known`.

    The names must be letters, digits and underscores (what BigQuery takes), so none needs escaping. A key written
    with escapes (`"i\\u0064"` for `id`) counts as another key: a false alarm, never a miss.
    """
    unusual = sorted(name for name in known if not _NAME.fullmatch(name))
    if unusual:
        raise ValueError(f"known keys must be letters, digits and underscores; got {unusual}")
    trie: _Trie = {}
    for name in known:
        node = trie
        for char in name:
            node = node.setdefault(char, {})
        node[""] = {}
    other = _other_than(trie)
    return KeySearch(compact=rf'(?s)[{{,]"(?:{other})":', spaced=rf'(?s)[{{,]{_SPACE}*"(?:{other})"{_SPACE}*:')


def _other_than(node: _Trie) -> str:
    """The strings that continue the prefix at `node` into a name not in the trie (its complement, as a regex)."""
    children = sorted(char for char in node if char)
    choices = [] if "" in node else [""]  # the prefix itself, when it is not a name
    choices.append(rf'[^"\\{"".join(children)}]{_CHAR}*')  # a character no name continues with here
    choices.append(rf"\\.{_CHAR}*")  # an escape: names hold none
    choices.extend(f"{char}(?:{_other_than(node[char])})" for char in children)
    return "|".join(choices)


def may_hold_other_keys(text: bytes, search: KeySearch) -> bool:
    """True when some line of the NDJSON text may hold a key `search` does not know, searched in native code.

    Lines are read as one text column (a JSON line holds no raw control character, so the unit separator 0x1f never
    splits one); text polars cannot read that way counts as a match, so the caller's exact path explains it.
    """
    lines = pl.scan_csv(text, has_header=False, separator="\x1f", quote_char=None, schema={_LINE: pl.String})
    line = pl.col(_LINE).str
    try:
        found = lines.select(compact=line.contains(search.compact).any(), spaced=line.contains(_SPACED_KEY).any())
        compact, spaced = found.collect().row(0)
        if compact or not spaced:
            return bool(compact)
        return bool(lines.select(line.contains(search.spaced).any()).collect().item())
    except pl.exceptions.PolarsError:
        return True
