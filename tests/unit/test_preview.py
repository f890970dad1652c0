"""Unit tests for daarion_bridge.translate.preview (pure, no I/O)."""

from __future__ import annotations

import random
import sys
from typing import Any

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from daarion_bridge.translate.preview import (
    BadEvent,
    fit,
    normalize_text,
    render_preview,
    strip_reply_fallback,
    truncate_graphemes,
)

ELLIPSIS = "\u2026"
FAMILY = "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # 👩‍👩‍👧‍👦, 7 code points
FLAG_UA = "\U0001f1fa\U0001f1e6"  # 🇺🇦
THUMBS_DARK = "\U0001f44d\U0001f3ff"  # 👍🏿
E_ACUTE = "e\u0301"
HANGUL_JAMO = "\u1100\u1161\u11a8"  # ᄀ ᅡ ᆨ, one syllable
ZALGO = "Z" + "".join(chr(0x0300 + i % 0x70) for i in range(300))
REPLY = {"m.relates_to": {"m.in_reply_to": {"event_id": "$parent"}}}


def text(body: Any, **extra: Any) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, **extra}


def preview(content: Any, limit: int = 500, event_type: str = "m.room.message") -> str:
    return render_preview(event_type, content, limit)


def graphemes(s: str) -> list[str]:
    return regex.findall(r"\X", s)


def boundaries(s: str) -> set[int]:
    """Code-point offsets at which s may be cut without splitting a grapheme."""
    out, pos = {0}, 0
    for g in graphemes(s):
        pos += len(g)
        out.add(pos)
    return out


def reference_truncate(s: str, limit: int) -> str:
    """Independent, slow statement of the truncation rule."""
    if len(s) <= limit:
        return s
    kept: list[str] = []
    used = 0
    for g in graphemes(s):
        if used + len(g) > limit - 1:
            break
        kept.append(g)
        used += len(g)
    while kept and not regex.sub(r"\p{White_Space}", "", kept[-1]):
        kept.pop()
    return "".join(kept) + ELLIPSIS


def assert_clean_cut(source: str, result: str, limit: int) -> None:
    assert len(result) <= limit
    if result == source:
        return
    assert result.endswith(ELLIPSIS)
    head = result[:-1]
    assert source.startswith(head)
    assert len(head) in boundaries(source), "cut inside a grapheme cluster"


# --- plain text ------------------------------------------------------------------


@pytest.mark.parametrize("msgtype", ["m.text", "m.notice"])
def test_text_like_msgtypes_use_body(msgtype: str) -> None:
    assert preview({"msgtype": msgtype, "body": "waves hello"}) == "waves hello"


def test_formatted_body_is_ignored() -> None:
    content = text("plain", format="org.matrix.custom.html", formatted_body="<b>rich</b>")
    assert preview(content) == "plain"


def test_unknown_msgtype_with_string_body_is_the_body() -> None:
    assert preview({"msgtype": "org.example.custom", "body": "custom  thing"}) == "custom thing"


# --- reply fallback --------------------------------------------------------------

QUOTED = "> <@alice:example.org> first line\n> second line\n\nmy  answer\nline two"


def test_reply_fallback_stripped_for_replies() -> None:
    assert preview(text(QUOTED, **REPLY)) == "my answer line two"


def test_reply_fallback_kept_when_not_a_reply() -> None:
    expected = "> <@alice:example.org> first line > second line my answer line two"
    assert preview(text(QUOTED)) == expected


def test_edit_relation_is_not_a_reply() -> None:
    content = text("> quoted\n\nanswer", **{"m.relates_to": {"rel_type": "m.replace"}})
    assert preview(content) == "> quoted answer"


def test_reply_fallback_with_bare_quote_lines() -> None:
    body = "> <@bob:example.org> para one\n>\n> para two\n\nanswer"
    assert preview(text(body, **REPLY)) == "answer"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("> <@a:x> q1\n> q2\n\nanswer", "answer"),
        ("> <@a:x> q\nanswer", "answer"),  # no blank separator
        ("> <@a:x> q\n\n\nanswer", "\nanswer"),  # only ONE blank line belongs to the fallback
        ("> <@a:x> q\r\n\r\nanswer", "answer"),
        ("> <@a:x> q\r\n>\r\n> r\r\n\r\nanswer", "answer"),
        ("> <@a:x>\n\nanswer", "answer"),
        ("> <@a:x> only a quote", ""),
        (">not a quote\n\nanswer", ">not a quote\n\nanswer"),
        ("answer\n> later quote", "answer\n> later quote"),
        ("> <@a:x> q\n\nanswer\n> kept\n\nend", "answer\n> kept\n\nend"),
        # A reply without a fallback (MSC2781) whose own text opens with a quote keeps it.
        ("> a quote of my own\n\nanswer", "> a quote of my own\n\nanswer"),
        ("", ""),
    ],
)
def test_strip_reply_fallback(body: str, expected: str) -> None:
    assert strip_reply_fallback(body) == expected


# --- normalisation ---------------------------------------------------------------


def test_whitespace_collapsed_newlines_tabs_nbsp() -> None:
    body = " \n\t hello\u00a0\u00a0world\r\n\n\tagain\u3000\u2028end \t\n"
    assert preview(text(body)) == "hello world again end"


def test_every_unicode_white_space_collapses() -> None:
    all_chars = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    spaces = regex.findall(r"\p{White_Space}", all_chars)
    assert len(spaces) == 25
    for ch in spaces:
        assert normalize_text(f"{ch}a{ch}{ch}b{ch}") == "a b", hex(ord(ch))


@pytest.mark.parametrize("ch", ["\x1c", "\x1f", "\u200b", "\u200d", "\ufeff", "\x07", "\x1b"])
def test_non_white_space_controls_are_kept(ch: str) -> None:
    assert normalize_text(f"a{ch}b{ch}") == f"a{ch}b{ch}"


def test_whitespace_only_body_gives_empty_preview() -> None:
    assert preview(text(" \n\t\u00a0 ")) == ""


def test_nul_replaced() -> None:
    assert preview(text("a\x00b\x00\x00")) == "a\ufffdb\ufffd\ufffd"


def test_lone_surrogate_replaced() -> None:
    assert normalize_text("a\ud800b\udfff") == "a\ufffdb\ufffd"


@pytest.mark.parametrize(
    "body",
    [
        "<script>alert('x')</script> &amp; <b>bold</b>",
        "'; DROP TABLE messages; -- \\ % _ $1",
        "\u200fright-to-left\u202e reversed \u202c",
        f"emoji {FAMILY} {FLAG_UA} {THUMBS_DARK} {E_ACUTE}",
        "ctrl\x01\x07\x1b[31m",
    ],
)
def test_literal_characters_kept(body: str) -> None:
    assert preview(text(body)) == body


def test_normalised_before_truncation() -> None:
    assert preview(text("a\n\n\n\nb"), limit=3) == "a b"


# --- media, location, sticker, encrypted -------------------------------------------

MEDIA = [
    ("m.image", "[image]"),
    ("m.video", "[video]"),
    ("m.audio", "[audio]"),
    ("m.file", "[file]"),
]


@pytest.mark.parametrize(("msgtype", "label"), MEDIA)
@pytest.mark.parametrize(
    ("extra", "expected_suffix"),
    [
        ({"body": "cat.png", "filename": "cat.png"}, " cat.png"),
        ({"body": "cat.png"}, " cat.png"),
        ({"filename": "cat.png"}, " cat.png"),
        ({"body": "look  at\nthis", "filename": "cat.png"}, " cat.png: look at this"),
        ({"body": "cat.png", "filename": ""}, " cat.png"),
        ({"body": "cat.png", "filename": 7}, " cat.png"),
        ({"body": "  ", "filename": "cat.png"}, " cat.png"),
        ({}, ""),
        ({"body": ""}, ""),
        ({"body": " \n "}, ""),
        ({"body": None, "filename": None}, ""),
        ({"body": 42}, ""),
    ],
)
def test_media(msgtype: str, label: str, extra: dict[str, Any], expected_suffix: str) -> None:
    content = {"msgtype": msgtype, "url": "mxc://example.org/abc", **extra}
    assert preview(content) == label + expected_suffix


def test_media_caption_in_a_reply_is_not_treated_as_fallback() -> None:
    content = {"msgtype": "m.image", "filename": "a.png", "body": "> quote", **REPLY}
    assert preview(content) == "[image] a.png: > quote"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            {"msgtype": "m.location", "body": "Kyiv", "geo_uri": "geo:50.45,30.52"},
            "[location] Kyiv",
        ),
        ({"msgtype": "m.location", "geo_uri": "geo:50.45,30.52"}, "[location]"),
        ({"msgtype": "m.location", "body": ""}, "[location]"),
    ],
)
def test_location(content: dict[str, Any], expected: str) -> None:
    assert preview(content) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"body": "Happy cat", "url": "mxc://x/y", "info": {}}, "[sticker] Happy cat"),
        ({"url": "mxc://x/y"}, "[sticker]"),
        ({"body": 3}, "[sticker]"),
    ],
)
def test_sticker(content: dict[str, Any], expected: str) -> None:
    assert preview(content, event_type="m.sticker") == expected


@pytest.mark.parametrize(
    "content",
    [
        {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEn..."},
        {"msgtype": "m.text", "body": "leaked plaintext"},
        {},
        ["not", "a", "mapping"],
        None,
    ],
)
def test_encrypted_is_always_the_marker(content: Any) -> None:
    assert preview(content, event_type="m.room.encrypted") == "[encrypted]"


# --- malformed events --------------------------------------------------------------

SECRET = "the-secret-message-text"


@pytest.mark.parametrize(
    ("event_type", "content"),
    [
        ("m.room.message", [SECRET]),
        ("m.room.message", SECRET),
        ("m.room.message", None),
        ("m.sticker", [SECRET]),
        ("m.room.message", {"msgtype": "m.text"}),
        ("m.room.message", {"msgtype": "m.text", "body": None}),
        ("m.room.message", {"msgtype": "m.notice", "body": [SECRET]}),
        ("m.room.message", {"msgtype": "m.emote", "body": {"text": SECRET}}),
        ("m.room.message", {"msgtype": "org.example.custom", "url": SECRET}),
        ("m.room.message", {"body": SECRET}),
        ("m.room.message", {"msgtype": 5, "body": SECRET}),
        ("m.room.message", {"msgtype": None, "body": SECRET}),
        ("m.room.message", {}),  # what a redacted message looks like
        ("m.reaction", {"body": SECRET}),
    ],
)
def test_bad_event(event_type: str, content: Any) -> None:
    with pytest.raises(BadEvent) as info:
        render_preview(event_type, content, 500)
    assert str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_bad_event_is_a_value_error() -> None:
    assert issubclass(BadEvent, ValueError)


def test_bad_event_message_is_a_short_reason() -> None:
    with pytest.raises(BadEvent, match="m.room.message without a string body"):
        preview({"msgtype": "m.text", "body": 1})


# --- truncation --------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, -500])
def test_limit_below_one_raises(limit: int) -> None:
    with pytest.raises(ValueError):
        truncate_graphemes("abc", limit)
    with pytest.raises(ValueError):
        preview(text("abc"), limit=limit)
    with pytest.raises(ValueError):
        truncate_graphemes("", limit)


def test_exactly_limit_is_unchanged() -> None:
    assert preview(text("abcdefghij"), limit=10) == "abcdefghij"
    assert truncate_graphemes(FAMILY, len(FAMILY)) == FAMILY


def test_one_over_limit_is_cut_with_ellipsis() -> None:
    result = preview(text("abcdefghijk"), limit=10)
    assert result == "abcdefghi" + ELLIPSIS
    assert len(result) == 10


def test_limit_one() -> None:
    assert truncate_graphemes("ab", 1) == ELLIPSIS
    assert truncate_graphemes("a", 1) == "a"


def test_trailing_space_before_ellipsis_is_stripped() -> None:
    assert truncate_graphemes("abcd efgh", 6) == "abcd" + ELLIPSIS
    assert truncate_graphemes("ab    cdefgh", 6) == "ab" + ELLIPSIS


def test_whitespace_with_attached_prepend_is_not_split() -> None:
    # U+0600 (Prepend) + space is a single grapheme cluster: it must stay whole.
    s = "ab\u0600 cdefgh"
    assert truncate_graphemes(s, 5) == "ab\u0600 " + ELLIPSIS


CLUSTERS = {
    "zwj_family": FAMILY,
    "flag": FLAG_UA,
    "skin_tone": THUMBS_DARK,
    "combining_acute": E_ACUTE,
    "stacked_marks": "a\u0301\u0302\u0303\u0304",
    "hangul_jamo": HANGUL_JAMO,
    "keycap": "1\ufe0f\u20e3",
    "crlf": "\r\n",
    "devanagari_conjunct": "\u0915\u094d\u0937",
}


@pytest.mark.parametrize("cluster", CLUSTERS.values(), ids=CLUSTERS.keys())
def test_cut_inside_cluster_never_splits_it(cluster: str) -> None:
    source = "xy" + cluster + "z" * 5
    start, end = 2, 2 + len(cluster)
    for limit in range(1, len(source) + 1):
        result = truncate_graphemes(source, limit)
        assert_clean_cut(source, result, limit)
        assert result == reference_truncate(source, limit)
        head = result.removesuffix(ELLIPSIS) if result != source else result
        assert len(head) <= start or len(head) >= end, f"split at limit {limit}"
        if start < limit - 1 < end:  # the cut point falls inside the cluster
            assert result == "xy" + ELLIPSIS


@pytest.mark.parametrize("cluster", CLUSTERS.values(), ids=CLUSTERS.keys())
def test_cluster_kept_whole_when_it_fits(cluster: str) -> None:
    source = "xy" + cluster + "z" * 5
    expected = "xy" + (cluster if cluster.strip() else "") + ELLIPSIS
    assert truncate_graphemes(source, len(cluster) + 3) == expected


def test_adjacent_flags_pair_up_correctly() -> None:
    source = "xy" + FLAG_UA + "\U0001f1f5\U0001f1f1" + "zz"  # 🇺🇦🇵🇱
    assert truncate_graphemes(source, 4) == "xy" + ELLIPSIS
    assert truncate_graphemes(source, 5) == "xy" + FLAG_UA + ELLIPSIS
    assert truncate_graphemes(source, 6) == "xy" + FLAG_UA + ELLIPSIS
    assert truncate_graphemes(source, 7) == source[:6] + ELLIPSIS


def test_family_emoji_explicit() -> None:
    assert preview(text("x" + FAMILY + "y"), limit=5) == "x" + ELLIPSIS
    assert preview(text("x" + FAMILY + "yz"), limit=9) == "x" + FAMILY + ELLIPSIS


def test_single_huge_zalgo_grapheme_gives_only_ellipsis() -> None:
    assert len(graphemes(ZALGO)) == 1
    assert preview(text(ZALGO), limit=50) == ELLIPSIS
    assert preview(text("ab " + ZALGO), limit=50) == "ab" + ELLIPSIS
    assert preview(text(ZALGO), limit=len(ZALGO)) == ZALGO


def test_limit_500_over_10000_chars() -> None:
    rng = random.Random(7)
    words = ["hello", "світ", FAMILY, FLAG_UA, E_ACUTE, "x" * 12, "\n\n", "\t"]
    body = " ".join(rng.choice(words) for _ in range(4000))[:10_000]
    result = preview(text(body), limit=500)
    normalised = normalize_text(body)
    assert len(body) == 10_000
    assert 480 <= len(result) <= 500
    assert_clean_cut(normalised, result, 500)
    assert result == reference_truncate(normalised, 500)


ALPHABET = [
    *"abcXYZ019 .,",
    " ",
    "  ",
    "\u00a0",
    "\n",
    FAMILY,
    FLAG_UA,
    "\U0001f1fa",  # lone regional indicator: pairs with its neighbours
    THUMBS_DARK,
    "\U0001f3ff",  # lone skin-tone modifier
    "\u200d",
    "\u0301",
    "\u0308\u0323",
    HANGUL_JAMO,
    "\u1100",
    "\u11a8",
    "\u0600",
    "\u0915\u094d",
    "\u05d0\u05d1",
    "\u200f",
]


def test_property_random_strings_fixed_seed() -> None:
    rng = random.Random(1234)
    cut = 0
    for _ in range(400):
        source = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
        limit = rng.randint(1, 60)
        result = truncate_graphemes(source, limit)
        assert len(result) <= limit
        assert_clean_cut(source, result, limit)
        assert result == reference_truncate(source, limit)
        if result != source:
            cut += 1
            kept = graphemes(result[:-1])
            assert not kept or regex.sub(r"\p{White_Space}", "", kept[-1])
        rendered = preview(text(source), limit=limit)
        assert len(rendered) <= limit
        assert_clean_cut(normalize_text(source), rendered, limit)
    assert cut > 100  # the loop really exercised cutting


ASCII_HEAVY = [*"abcxyz ,.-", " ", "\t", "\r\n", "\r", "\n", "\x1c", "\u0301", "\u00a0", "\u0600"]


def test_property_ascii_heavy_strings_fixed_seed() -> None:
    """Mostly-ASCII text takes a fast path; it must agree with the grapheme walk."""
    rng = random.Random(1234)
    for _ in range(400):
        weights = [30] * 10 + [3] * (len(ASCII_HEAVY) - 10)
        source = "".join(rng.choices(ASCII_HEAVY, weights, k=rng.randint(0, 40)))
        limit = rng.randint(1, 45)
        result = truncate_graphemes(source, limit)
        assert result == reference_truncate(source, limit)
        assert_clean_cut(source, result, limit)
        rendered = preview(text(source), limit=limit)
        assert rendered == reference_truncate(normalize_text(source), limit)


@pytest.mark.parametrize(
    ("source", "limit", "expected"),
    [
        ("abcd\u0301efgh", 5, "abc" + ELLIPSIS),  # mark just past the window edge
        ("abc\r\nefgh", 5, "abc" + ELLIPSIS),
        ("ab\r\nefgh", 5, "ab" + ELLIPSIS),
        ("a\x1cb\x1c\x1ccdefgh", 6, "a\x1cb\x1c\x1c" + ELLIPSIS),  # C0 separators are not spaces
        ("ab\x1c\u00e9fgh", 4, "ab\x1c" + ELLIPSIS),  # ... on the grapheme path too
    ],
)
def test_ascii_window_edges(source: str, limit: int, expected: str) -> None:
    assert truncate_graphemes(source, limit) == expected


# --- the near-the-cut segmentation agrees with segmenting everything ---------------------

PIECES = [
    "a", "Z", "7", " ", "\t", "\r\n", "\r", "\n", ".", "é", "e\u0301", "Ж", "ї",
    "क्", "्", "ष", "\u200d", "\u0600", "\u0600 ", "\u1100", "\u1161", "\u11a8", "한",
    FAMILY, FLAG_UA, "\U0001f1fa", "\U0001f44d\U0001f3fd", "\U0001f3fd", "\ufe0f", "\u0308",
    "\u202e", "\u200f", "😀", "中", "\x07",
]  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=120).map("".join), st.integers(1, 150))
def test_truncate_matches_full_segmentation(text: str, limit: int) -> None:
    assert truncate_graphemes(text, limit) == reference_truncate(text, limit)


def test_an_emoji_modifier_inside_an_indic_conjunct_does_not_anchor_the_cut() -> None:
    """Found by hypothesis: KA VIRAMA (skin tone) KA VIRAMA is one cluster (GB9c lets
    Extend characters sit inside a conjunct), so nothing of it fits in 3 code points."""
    text = "\u0915\u094d\U0001f3fd\u0915\u094d"
    assert truncate_graphemes(text, 4) == reference_truncate(text, 4)


# With what makes normalizing only a head tricky: whitespace runs (which collapse, so a
# head may shrink below the limit), a C0 separator (normalize's other branch), NUL and
# a lone surrogate.
HEAD_PIECES = [*PIECES, "  ", "\t\n ", "\u00a0", "\u3000", "\x1c", "\x00", "\udc80", "word"]


@settings(max_examples=500, deadline=None)
@given(pieces=st.lists(st.sampled_from(HEAD_PIECES), max_size=200), limit=st.integers(1, 40))
def test_fit_equals_normalizing_the_whole_text(pieces: list[str], limit: int) -> None:
    body = "".join(pieces)
    assert fit(body, limit) == truncate_graphemes(normalize_text(body), limit)


def test_fit_reads_only_the_head_of_a_long_text() -> None:
    """The point of fit: a cut far past the limit leaves the preview as it was."""
    body = "hello world " * 1000
    preview = fit(body, 20)
    assert preview == truncate_graphemes(normalize_text(body), 20) == "hello world hello w…"
    assert fit(body + "\x1c" + "\x00", 20) == preview  # never looked at


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(HEAD_PIECES), max_size=60).map("".join))
def test_normalize_text_is_collapse_and_strip(body: str) -> None:
    """Its fast paths (a text already normal, split/join without C0 separators) agree
    with the rule itself: NUL and lone surrogates replaced, every White_Space run one
    space, none at either end."""
    storable = regex.sub("[\x00\ud800-\udfff]", "\ufffd", body)
    expected = regex.sub(r"\p{White_Space}+", " ", storable).strip(" ")
    assert normalize_text(body) == expected
