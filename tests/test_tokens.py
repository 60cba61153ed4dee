from __future__ import annotations

import pytest
from fakewebui.tiny_model import ID_END, ID_START, clip_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_dumpunet.errors import DumpUnetError, SpecError
from lib_dumpunet.tokens import (
    BpeVocabulary,
    Chunk,
    EmbeddingIndex,
    Fix,
    Fragment,
    TokenTable,
    chunk_prompt,
    parse_emphasis,
)
from lib_dumpunet.tokens import EmbeddingRef as Ref

TOK = clip_tokenizer()
VOCAB = BpeVocabulary.of(TOK)
COMMA = TOK.get_vocab()[",</w>"]


def tokenize(texts):
    return TOK(list(texts), truncation=False, add_special_tokens=False)["input_ids"] if texts else []


def ids(text):
    return tokenize([text])[0]


def chunks(prompt, **kwargs):
    return chunk_prompt(prompt, tokenize, start=ID_START, end=ID_END, comma=COMMA, **kwargs)


def table(prompt, **kwargs):
    return TokenTable.from_chunks(chunks(prompt, **kwargs), VOCAB)


def content(chunk):
    """The prompt ids of a chunk, without start, end and padding."""
    body = chunk.tokens[1:-1]
    return body[: body.index(ID_END)] if ID_END in body else body


# --- emphasis -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a (b) c", [("a ", 1.0), ("b", 1.1), (" c", 1.0)]),
        ("((b))", [("b", 1.1 * 1.1)]),
        ("[b]", [("b", 1 / 1.1)]),
        ("(b:1.5) c", [("b", 1.5), (" c", 1.0)]),
        ("( b : 0.5 )", [(" b ", 0.5)]),
        ("(b:-1)", [("b", -1.0)]),
        ("(unclosed", [("unclosed", 1.1)]),
        ("[unclosed", [("unclosed", 1 / 1.1)]),
        ("a) b]", [("a) b]", 1.0)]),  # closers with nothing open are text
        ("x:1.2)", [("x:1.2)", 1.0)]),  # a weight with no bracket open is text
        ("(x:1.2.3)", [("x:1.2.3", 1.1)]),  # not a number: text, and the bracket is plain (the webui would crash)
        (r"\(x\) \[y\] \\", [("(x) [y] \\", 1.0)]),
        ("a\\b", [("ab", 1.0)]),  # a backslash before anything else vanishes
        ("", [("", 1.0)]),
        ("a:b", [("a:b", 1.0)]),
    ],
)
def test_emphasis(prompt, expected):
    got = [(f.text, f.weight) for f in parse_emphasis(prompt)]
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_break_is_its_own_fragment_but_only_outside_brackets():
    assert parse_emphasis("a BREAK b") == [Fragment("a", 1.0), Fragment("BREAK", -1.0), Fragment("b", 1.0)]
    assert parse_emphasis("a BREAK b")[1].is_break
    inside = parse_emphasis("(a BREAK b)")
    assert [f.text for f in inside] == ["a", "BREAK", "b"]
    assert not any(f.is_break for f in inside), "weighted, BREAK is only a word"
    assert not any(f.is_break for f in parse_emphasis("BREAKFAST, aBREAK"))


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab :.1()[]\\BREAK", max_size=40))
def test_emphasis_never_raises_and_keeps_letters(prompt):
    fragments = parse_emphasis(prompt)
    assert fragments
    letters = "".join(c for c in prompt if c in "ab")
    assert "".join(c for f in fragments if not f.is_break for c in f.text if c in "ab") == letters


# --- chunks -------------------------------------------------------------------------------------------------------


def test_a_short_prompt_is_one_padded_chunk():
    (chunk,) = chunks("a red hat")
    assert len(chunk.tokens) == len(chunk.multipliers) == 77
    assert chunk.tokens[0] == ID_START and chunk.tokens[-1] == ID_END
    assert content(chunk) == ids("a red hat")
    assert set(chunk.tokens[4:]) == {ID_END}


def test_emphasis_weights_reach_the_tokens():
    (chunk,) = chunks("a (red hat:1.3) [cat]")
    assert chunk.multipliers[1:6] == pytest.approx([1.0, 1.3, 1.3, 1 / 1.1, 1.0])
    (plain,) = chunks("a (red hat:1.3)", emphasis=False)
    assert "(</w>" in [VOCAB.piece(t) for t in content(plain)], "emphasis off: brackets are tokens"
    assert set(plain.multipliers) == {1.0}


def test_break_starts_a_new_chunk():
    first, second = chunks("a cat BREAK a hat")
    assert content(first) == ids("a cat")
    assert content(second) == ids("a hat")


def test_eighty_tokens_make_two_chunks_and_lose_none():
    words = " ".join(["cat", "dog"] * 40)
    prompt_ids = ids(words)
    assert len(prompt_ids) == 80
    got = chunks(words)
    assert len(got) == 2
    assert len(content(got[0])) == 75
    assert content(got[0]) + content(got[1]) == prompt_ids


def test_a_full_chunk_moves_the_words_after_a_recent_comma():
    prompt = ", ".join(["one two three four five six"] * 15)  # 7 tokens per item: the 76th is no comma
    got = chunks(prompt)
    first = content(got[0])
    assert first[-1] == COMMA and len(first) < 75, "the chunk ends at the last comma"
    assert first + content(got[1]) == ids(prompt)
    no_backtrack = chunks(prompt, comma_backtrack=0)
    assert len(content(no_backtrack[0])) == 75


def test_an_embedding_becomes_placeholders_with_a_fix():
    index = EmbeddingIndex({"myemb": 3}, tokenize)
    (chunk,) = chunks("a photo of (myemb:1.2) hat", embeddings=index)
    body = content(chunk)
    assert body[3:6] == [0, 0, 0]
    assert [(f.offset, f.embedding.name, f.embedding.vectors) for f in chunk.fixes] == [(3, "myemb", 3)]
    assert chunk.multipliers[4:7] == pytest.approx([1.2] * 3)


def test_an_embedding_that_does_not_fit_moves_to_the_next_chunk():
    index = EmbeddingIndex({"myemb": 4}, tokenize)
    filler = " ".join(["cat"] * 73)
    first, second = chunks(filler + " myemb", embeddings=index)
    assert len(content(first)) == 73
    assert second.fixes == [Fix(0, Ref("myemb", 4))]


# --- the table ----------------------------------------------------------------------------------------------------


def test_rows_name_columns_words_weights_and_padding():
    t = table("(sunglasses:1.4), a t-shirt")
    assert len(t) == 77 and t.chunks == 1
    head = t.rows[:7]
    assert [r.position for r in head] == list(range(7))
    assert [r.kind for r in head] == ["start", "text", "text", "text", "text", "text", "text"]
    assert [r.text for r in head[1:]] == ["sunglasses", ",", "a", "t", "-", "shirt"]
    assert head[1].weight == pytest.approx(1.4) and head[2].weight == 1.0
    assert t.rows[7].kind == "end" and {r.kind for r in t.rows[8:]} == {"pad"}
    assert t.labels()[:2] == ["BOS", "sunglasses"] and t.labels()[7:9] == ["EOS", "pad"]
    assert len(t.table()) == 8, "the inspector leaves out padding"


def test_a_word_of_several_pieces_is_one_word():
    t = table("myemb sunglasses")  # 'mye' + 'mb</w>'
    assert [(r.text, r.word, r.word_index) for r in t.rows[1:4]] == [
        ("mye", "myemb", 0),
        ("mb", "myemb", 0),
        ("sunglasses", "sunglasses", 1),
    ]


def test_embedding_rows_carry_its_name():
    index = EmbeddingIndex({"myemb": 2}, tokenize)
    t = table("a myemb hat", embeddings=index)
    rows = t.rows[2:4]
    assert [(r.kind, r.embedding, r.word, r.text) for r in rows] == [
        ("embedding", "myemb", "myemb", "<myemb:0>"),
        ("embedding", "myemb", "myemb", "<myemb:1>"),
    ]
    assert t.rows[4].text == "hat" and t.rows[4].word_index == 2
    assert t.pick("myemb").positions == (2, 3)


def test_columns_of_a_second_chunk_follow_its_start_token():
    t = table("a cat BREAK a hat")
    assert len(t) == 154 and t.chunks == 2
    assert t.rows[77].kind == "start" and t.rows[77].chunk == 1
    assert (t.rows[79].text, t.rows[79].position, t.rows[79].index) == ("hat", 79, 2)
    assert t.pick("hat").positions == (79,)


def test_eighty_tokens_with_emphasis_an_embedding_and_break():
    index = EmbeddingIndex({"myemb": 2}, tokenize)
    prompt = "(myemb:1.1) " + " ".join(["cat", "dog"] * 38) + " giraffe cat BREAK [hat]"
    t = table(prompt, embeddings=index)
    assert t.chunks == 3  # 2 + 78 tokens fill chunk 0 and some of 1; BREAK opens chunk 2
    assert [r.embedding for r in t.rows[1:3]] == ["myemb", "myemb"]
    hat = t.pick("hat").positions
    assert hat == (155,) and t.rows[155].weight == pytest.approx(1 / 1.1)
    assert t.pick("giraffe").positions == (77 + 1 + 3,)  # chunk 0 holds myemb and 73 words, chunk 1 the other 3


def test_chunks_of_the_wrong_length_are_refused():
    with pytest.raises(DumpUnetError, match="77"):
        TokenTable.from_chunks([Chunk([ID_START, ID_END], [1.0, 1.0])], VOCAB)


# --- picking ------------------------------------------------------------------------------------------------------

PROMPT = "a red hat, a long neck, t-shirt, 1girl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1, 3", (1, 3)),
        ("3,1,3", (1, 3)),
        ("2-4", (2, 3, 4)),
        (" 2 - 4 ", (2, 3, 4)),
        ("hat, neck", (3, 7)),
        ("HAT", (3,)),
        ("red hat", (2, 3)),
        ("redhat", (2, 3)),
        ("t-shirt", (9, 10, 11)),
        ('"1"', (13,)),
        ('"a"', (1, 5)),  # every occurrence
        ('","', (4, 8, 12)),
        ("hat,,neck,", (3, 7)),
        ("0", (0,)),
        ("76", (76,)),
    ],
)
def test_picks(text, expected):
    assert table(PROMPT).pick(text).positions == expected


def test_blank_picks_every_prompt_token():
    t = table(PROMPT)
    pick = t.pick("   ")
    assert pick.positions == tuple(range(1, 15))
    assert all(t.rows[p].kind == "text" for p in pick.positions)


def test_pick_groups_follow_the_items():
    pick = table(PROMPT).pick("neck, red hat")
    assert pick.groups == (("neck", (7,)), ("red hat", (2, 3)))
    assert pick.describe() == "neck (7), red hat (2-3)"


@pytest.mark.parametrize(
    ("text", "message", "caret_at"),
    [
        ("hat, hta", "no word 'hta' in the prompt; its words are: a, red, hat", 5),
        ("77", "column 77 is past the end: this prompt has columns 0–76", 0),
        ("1, 5-3", "goes backwards; write 3-5", 3),
        ("-1", "negative numbers", 0),
        ("1-2-3", "not a range", 0),
        ('"hat', "never closed", 0),
        ('""', "empty quotes", 0),
        ('"hat" neck', "expected a comma", 6),
        ("99999999999", "far larger", 0),
        ("green", "no word 'green'", 0),
    ],
)
def test_bad_picks_say_what_and_where(text, message, caret_at):
    with pytest.raises(SpecError) as info:
        table(PROMPT).pick(text)
    assert message in info.value.reason
    assert info.value.position == caret_at
    assert "^" in str(info.value)


def test_an_empty_prompt_has_nothing_to_pick_by_default():
    t = table("")
    assert len(t) == 77
    with pytest.raises(DumpUnetError, match="no tokens to pick"):
        t.pick("")
    assert t.pick("0").positions == (0,)


def test_overlong_picks_are_refused():
    with pytest.raises(DumpUnetError, match="at most"):
        table("a").pick("1," * 2000)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet='ahtred 0123456789-,"', max_size=30))
def test_picks_either_succeed_within_the_table_or_raise_spec_errors(text):
    t = table("a red hat")
    try:
        pick = t.pick(text)
    except DumpUnetError:
        return
    assert pick.positions and all(0 <= p < len(t) for p in pick.positions)
