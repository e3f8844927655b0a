"""Whether NDJSON text may hold an object key outside a known set: one regular expression, run by polars.

This is the cheap guard that lets the parser learn a file's columns from its first part instead of inferring a
schema over every line (which costs about as much as reading the file). Every key of a JSON object follows `{` or
`,` (and optional whitespace) and comes before `:` (after optional whitespace); the expression matches such a key
unless it is one of the known names, so text it does not match holds no other key, at any depth. It may also
match where there is no key (a string value ending in a comma, followed by a key) or at the key of a nested object:
the caller then infers the keys exactly. It never misses one.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final, TypeAlias

import polars as pl

__all__ = ["may_hold_other_keys", "other_key_pattern"]

_SPACE: Final = r"[ \t\r\n]*"
"""JSON whitespace."""
_CHAR: Final = r'(?:[^"\\]|\\.)'
"""One character of a JSON string as written: anything but a quote or a backslash, or an escape."""
_NAME: Final = re.compile(r"[A-Za-z0-9_]+")
_LINE: Final = "line"

_Trie: TypeAlias = dict[str, "_Trie"]
"""The known names, a character per level; the key "" marks the end of a name."""


def other_key_pattern(known: Collection[str]) -> str:
    """A regular expression (Rust syntax, as polars runs it) for a key that is none of `known`.

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
    return rf'(?s)[{{,]{_SPACE}"(?:{_other_than(trie)})"{_SPACE}:'


def _other_than(node: _Trie) -> str:
    """The strings that continue the prefix at `node` into a name not in the trie (its complement, as a regex)."""
    children = sorted(char for char in node if char)
    choices = [] if "" in node else [""]  # the prefix itself, when it is not a name
    choices.append(rf'[^"\\{"".join(children)}]{_CHAR}*')  # a character no name continues with here
    choices.append(rf"\\.{_CHAR}*")  # an escape: names hold none
    choices.extend(f"{char}(?:{_other_than(node[char])})" for char in children)
    return "|".join(choices)


def may_hold_other_keys(text: bytes, pattern: str) -> bool:
    """True when some line of the NDJSON text matches `pattern` (see `other_key_pattern`), searched in native code.

    Lines are read as one text column (a JSON line holds no raw control character, so the unit separator 0x1f never
    splits one); text polars cannot read that way counts as a match, so the caller's exact path explains it.
    """
    lines = pl.scan_csv(text, has_header=False, separator="\x1f", quote_char=None, schema={_LINE: pl.String})
    try:
        found = lines.select(pl.col(_LINE).str.contains(pattern).any()).collect().item()
    except pl.exceptions.PolarsError:
        return True
    return bool(found)
