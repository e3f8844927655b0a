"""The search for NDJSON keys outside a known set: it may raise a false alarm, but it never misses such a key,
whatever the values hold and however the JSON is written."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatch_pipeline.parsing.json_keys import key_search, may_hold_other_keys

KNOWN = ("id", "idx", "body", "created_at")
# Known names, their prefixes and extensions, other cases, and keys that need escapes or hold non-ASCII.
KEYS = st.sampled_from([*KNOWN, "", "i", "idxx", "ID", "bod", "body_", "ïd", 'a"b', "a\\b", "new", "a\u2028b"])
# Values that look like keys inside strings, and nested objects whose own keys are neither here nor there.
TRICKY = st.sampled_from(['","id":', ',"new":', '{"new":1}', "\\", '\\"', ", ", "{", "\n", "é"])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.lists(TRICKY).map("".join),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
LAYOUTS = st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", " :\r\n"), (",", " :"), (",\t", ":")])


def search(lines: list[str]) -> bool:
    text = "".join(f"{line}\n" for line in lines).encode()
    return may_hold_other_keys(text, key_search(KNOWN))


@settings(max_examples=150, deadline=None)
@given(
    objects=st.lists(st.dictionaries(KEYS, VALUES, max_size=5), min_size=1, max_size=6),
    layout=LAYOUTS,
    ascii_only=st.booleans(),
)
def test_a_key_outside_the_known_set_is_never_missed(
    objects: list[dict[str, object]], layout: tuple[str, str], ascii_only: bool
) -> None:
    lines = [json.dumps(obj, separators=layout, ensure_ascii=ascii_only) for obj in objects]
    if any(key not in KNOWN for obj in objects for key in obj):
        assert search(lines), lines


@pytest.mark.parametrize(
    "line",
    ['{"id":1,\t"new":2}', '{"id":1, "new":2}', '{"id":1,"new" :2}', '{"id":1,"new"\t:2}', '{ "new":1}', '{"new"  :1}'],
)
def test_a_key_with_whitespace_on_one_side_only_is_found(line: str) -> None:
    assert search([line])


def test_lines_with_only_known_keys_and_plain_values_raise_no_alarm() -> None:
    lines = [
        json.dumps({"id": "0001", "body": "Hi, see you at 3", "created_at": "2026-11-20T00:00:00Z"}),
        json.dumps({"idx": 7, "body": None}, separators=(", ", ": ")),
        json.dumps({"id": "ends in a space ", "body": 'He said "no" : then, "yes" '}, separators=(",", ":")),
        "",
    ]
    assert not search(lines)


@pytest.mark.parametrize("name", ["first name", "a.b", "ïd", ""])
def test_known_names_must_be_plain_identifiers(name: str) -> None:
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        key_search(["id", name])
