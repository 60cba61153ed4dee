"""The token inspector: which U-Net context column holds which token of a prompt, and picking tokens by word.

The webui's text encoder turns a prompt into chunks of 77 ids — a start token, 75 prompt tokens (padded with end
tokens), an end token — and concatenates the chunks' encodings, so column `c·77 + j` of the U-Net's `context` is
token j of chunk c. Emphasis (`(word:1.3)`, `[word]`) gives every token a multiplier; `BREAK` closes a chunk early;
a full chunk moves the words after a recent comma into the next chunk (comma back-tracking); a textual-inversion
keyword becomes as many placeholder ids as its embedding has vectors, with a "fix" saying where they go.

`TokenTable.from_chunks` reads that layout from the chunks the encoder built (the webui's own `PromptChunk`s, or
`Chunk`s from `chunk_prompt`, this module's rendition of the same rules for hosts without the webui) and a
`Vocabulary` that spells token ids. Each row says: column, chunk, token, the word it belongs to (a word is the run
of BPE pieces up to one that ends a word, so "sunglasses" is one word of two tokens and a comma is a word of its
own), emphasis weight, and the embedding whose vector it is.

`TokenTable.pick(text)` reads what users type to choose tokens: a comma list of column numbers (`1, 3`), ranges
(`4-6`), words or phrases (`hat, red hat`, matched case-insensitively and ignoring spaces, so `t-shirt` matches
the three tokens "t", "-", "shirt"), and quoted words (`"1"` is the word 1, not column 1). A blank field picks every
prompt token (no start, end or padding tokens). Anything that names nothing raises `SpecError` with a caret.
For callers that look the same text up in several tables (every AND sub-prompt, every prompt of a batch),
`pick_items` reads the text once into `PickItem`s and `TokenTable.lookup` finds one item in one table.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from lib_dumpunet.emphasis import BREAK, Fragment, parse_emphasis
from lib_dumpunet.errors import DumpUnetError, SpecError

__all__ = [
    "BREAK",
    "CHUNK_TOKENS",
    "COLUMNS_PER_CHUNK",
    "TABLE_HEADERS",
    "TOKENS_FIELD",
    "BpeVocabulary",
    "Chunk",
    "EmbeddingIndex",
    "Fix",
    "Fragment",
    "PickItem",
    "TokenPick",
    "TokenRow",
    "TokenTable",
    "Vocabulary",
    "chunk_prompt",
    "parse_emphasis",
    "pick_items",
]

CHUNK_TOKENS = 75  # prompt tokens per chunk
COLUMNS_PER_CHUNK = CHUNK_TOKENS + 2  # with the start and end tokens
TOKENS_FIELD = "Tokens"
MAX_PICK_LENGTH = 2000
TABLE_HEADERS = ("position", "token", "word", "chunk", "weight", "embedding")

_END_OF_WORD = "</w>"

Kind = Literal["start", "end", "pad", "text", "embedding"]


# --------------------------------------------------------------------------------------------------------------------
# Chunks


@dataclass(frozen=True)
class EmbeddingRef:
    """What a chunk needs to know of a textual-inversion embedding (the webui's `Embedding` has the same names)."""

    name: str
    vectors: int


@dataclass(frozen=True)
class Fix:
    """A textual-inversion embedding's vectors go at prompt-token `offset` of the chunk (column offset + 1)."""

    offset: int
    embedding: EmbeddingRef


@dataclass
class Chunk:
    """77 ids (start, 75 prompt tokens or end-token padding, end), a multiplier per id, and the embeddings' places."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)


class EmbeddingIndex:
    """Textual-inversion keywords by their token ids: finds the longest keyword starting at a position."""

    def __init__(self, keywords: dict[str, int], tokenize: Callable[[list[str]], list[list[int]]]) -> None:
        """`keywords`: keyword → number of vectors; `tokenize`: texts → ids (no start or end token)."""
        self._by_first: dict[int, list[tuple[tuple[int, ...], EmbeddingRef]]] = {}
        names = list(keywords)
        for name, ids in zip(names, tokenize(names) if names else [], strict=True):
            if ids:
                entry = (tuple(ids), EmbeddingRef(name, int(keywords[name])))
                self._by_first.setdefault(ids[0], []).append(entry)
        for entries in self._by_first.values():
            entries.sort(key=lambda e: len(e[0]), reverse=True)

    def find(self, tokens: Sequence[int], position: int) -> tuple[EmbeddingRef, int] | None:
        """(embedding, how many tokens its keyword takes) if a keyword starts at `position`."""
        for ids, ref in self._by_first.get(tokens[position], ()):
            if tuple(tokens[position : position + len(ids)]) == ids:
                return ref, len(ids)
        return None


class _ChunkBuilder:
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.chunks: list[Chunk] = []
        self.current = Chunk()
        self.last_comma = -1

    def close(self) -> None:
        c = self.current
        missing = CHUNK_TOKENS - len(c.tokens)
        c.tokens = [self.start, *c.tokens, *[self.end] * missing, self.end]
        c.multipliers = [1.0, *c.multipliers, *[1.0] * missing, 1.0]
        self.chunks.append(c)
        self.current = Chunk()
        self.last_comma = -1

    def backtrack(self) -> None:
        """Move what follows the last comma of a full chunk into a new chunk."""
        cut = self.last_comma + 1
        c = self.current
        moved_tokens, moved_weights = c.tokens[cut:], c.multipliers[cut:]
        del c.tokens[cut:], c.multipliers[cut:]
        self.close()
        self.current.tokens, self.current.multipliers = moved_tokens, moved_weights


def chunk_prompt(
    prompt: str,
    tokenize: Callable[[list[str]], list[list[int]]],
    *,
    start: int,
    end: int,
    comma: int | None,
    embeddings: EmbeddingIndex | None = None,
    emphasis: bool = True,
    comma_backtrack: int = 20,
) -> list[Chunk]:
    """The webui's chunks for `prompt` (its `tokenize_line`), for hosts that have no webui encoder.

    `tokenize` maps texts to ids without start/end tokens; `start`, `end`, `comma` are the tokenizer's ids;
    `emphasis=False` is the webui's emphasis mode "None" (brackets are text); `comma_backtrack` is the webui setting
    of that name (0 turns it off)."""
    fragments = parse_emphasis(prompt) if emphasis else [Fragment(prompt, 1.0)]
    build = _ChunkBuilder(start, end)
    for fragment, ids in zip(fragments, tokenize([f.text for f in fragments]), strict=True):
        if fragment.is_break:
            build.close()
            continue
        pos = 0
        while pos < len(ids):
            c = build.current
            if ids[pos] == comma:
                build.last_comma = len(c.tokens)
            elif (
                comma_backtrack
                and len(c.tokens) == CHUNK_TOKENS
                and build.last_comma != -1
                and len(c.tokens) - build.last_comma <= comma_backtrack
            ):
                build.backtrack()
            if len(build.current.tokens) == CHUNK_TOKENS:
                build.close()
            pos = _place(build, ids, pos, fragment.weight, embeddings)
    if build.current.tokens or not build.chunks:
        build.close()
    return build.chunks


def _place(build: _ChunkBuilder, ids: list[int], pos: int, weight: float, embeddings: EmbeddingIndex | None) -> int:
    """Put the token (or embedding keyword) at `pos` into the current chunk; returns the next position."""
    found = embeddings.find(ids, pos) if embeddings is not None else None
    if found is None:
        build.current.tokens.append(ids[pos])
        build.current.multipliers.append(weight)
        return pos + 1
    ref, length = found
    if len(build.current.tokens) + ref.vectors > CHUNK_TOKENS:
        build.close()
    c = build.current
    c.fixes.append(Fix(len(c.tokens), ref))
    c.tokens += [0] * ref.vectors
    c.multipliers += [weight] * ref.vectors
    return pos + length


# --------------------------------------------------------------------------------------------------------------------
# The table


class Vocabulary(Protocol):
    """Spells token ids: the BPE piece of an id, with "</w>" where a word ends (as CLIP's vocabulary has it)."""

    start: int
    end: int

    def piece(self, token: int) -> str: ...


@dataclass(frozen=True)
class BpeVocabulary:
    """A `Vocabulary` over a function id → piece."""

    piece_of: Callable[[int], str]
    start: int
    end: int

    def piece(self, token: int) -> str:
        try:
            return self.piece_of(token)
        except (KeyError, IndexError, TypeError):
            return f"<{token}>"

    @classmethod
    def of(cls, tokenizer) -> BpeVocabulary:
        """From a Hugging Face CLIP tokenizer (`convert_ids_to_tokens`) or open_clip's (`decoder`, `encoder`)."""
        if hasattr(tokenizer, "convert_ids_to_tokens"):
            return cls(
                lambda i: tokenizer.convert_ids_to_tokens(int(i)),
                int(tokenizer.bos_token_id),
                int(tokenizer.eos_token_id),
            )
        if hasattr(tokenizer, "decoder") and hasattr(tokenizer, "encoder"):
            enc = tokenizer.encoder
            return cls(lambda i: tokenizer.decoder[int(i)], int(enc["<start_of_text>"]), int(enc["<end_of_text>"]))
        msg = f"cannot read token ids with a {type(tokenizer).__name__}: it is not a CLIP tokenizer"
        raise DumpUnetError(msg)


@dataclass(frozen=True)
class TokenRow:
    position: int  # column of the U-Net context
    chunk: int
    index: int  # 0…76 within the chunk; 0 is the start token
    token: int  # id; 0 for an embedding's placeholders
    text: str  # the piece as text ("hat", ","), "<name>" for an embedding vector, or "<start>"/"<end>"/"<pad>"
    kind: Kind
    weight: float  # emphasis multiplier
    word: str | None = None  # the word this token is part of (an embedding's keyword); None for start/end/pad
    word_index: int | None = None  # the word's place among the prompt's words, from 0
    embedding: str | None = None

    @property
    def label(self) -> str:
        """Short label for a map column: the token, "<embedding>", "BOS", "EOS" or "pad"."""
        if self.kind == "embedding":
            return f"<{self.embedding}>"
        return {"start": "BOS", "end": "EOS", "pad": "pad"}.get(self.kind, self.text)

    def cells(self) -> list:
        """One row of the inspector's table, in `TABLE_HEADERS` order."""
        return [self.position, self.text, self.word or "", self.chunk, round(self.weight, 4), self.embedding or ""]


@dataclass(frozen=True)
class TokenPick:
    """Columns chosen by the user: all together, and per item typed (for one map per word)."""

    positions: tuple[int, ...]
    groups: tuple[tuple[str, tuple[int, ...]], ...]

    def describe(self) -> str:
        return ", ".join(f"{label} ({_spans(p)})" for label, p in self.groups) if self.groups else "(none)"


@dataclass(frozen=True)
class _Word:
    index: int
    text: str
    positions: tuple[int, ...]
    key: str  # lower case, no whitespace: what picks compare against


class TokenTable:
    """Every context column of an encoded prompt, one `TokenRow` each."""

    def __init__(self, rows: Sequence[TokenRow]) -> None:
        self.rows = tuple(rows)
        words: dict[int, list[TokenRow]] = {}
        for row in self.rows:
            if row.word_index is not None:
                words.setdefault(row.word_index, []).append(row)
        self.words = tuple(
            _Word(i, rs[0].word or "", tuple(r.position for r in rs), _key(rs[0].word or ""))
            for i, rs in sorted(words.items())
        )

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def chunks(self) -> int:
        return len(self.rows) // COLUMNS_PER_CHUNK

    @classmethod
    def from_chunks(cls, chunks: Iterable, vocab: Vocabulary) -> TokenTable:
        """Rows for encoder chunks: objects with `tokens` (77 ids), `multipliers` and `fixes` (`offset`, and an
        `embedding` with `name` and `vectors`) — the webui's `PromptChunk` or this module's `Chunk`."""
        rows: list[TokenRow] = []
        word = _WordBuilder()
        for c, chunk in enumerate(chunks):
            ids, weights = list(chunk.tokens), list(chunk.multipliers)
            if len(ids) != COLUMNS_PER_CHUNK or len(weights) != len(ids):
                msg = f"chunk {c} has {len(ids)} tokens and {len(weights)} weights; the encoder's chunks have 77"
                raise DumpUnetError(msg)
            vectors = _fix_positions(chunk)
            ended = False
            for j, (token, weight) in enumerate(zip(ids, weights, strict=True)):
                position = c * COLUMNS_PER_CHUNK + j
                if j in vectors:
                    name, vector = vectors[j]
                    word.flush()
                    index = word.embedding(name)
                    rows.append(
                        TokenRow(position, c, j, token, f"<{name}:{vector}>", "embedding", weight, name, index, name)
                    )
                elif j == 0:
                    rows.append(TokenRow(position, c, j, token, "<start>", "start", weight))
                elif ended or token == vocab.end or j == COLUMNS_PER_CHUNK - 1:
                    kind: Kind = "pad" if ended else "end"
                    ended = True
                    rows.append(TokenRow(position, c, j, token, f"<{kind}>", kind, weight))
                else:
                    piece = vocab.piece(token)
                    rows.append(TokenRow(position, c, j, token, _spell(piece), "text", weight))
                    word.add(len(rows) - 1, piece)
        word.flush()
        return cls(word.named(rows))

    def labels(self) -> list[str]:
        """A label per column, for the columns of a Q*K map."""
        return [r.label for r in self.rows]

    def table(self) -> list[list]:
        """The inspector's rows, `TABLE_HEADERS` columns; padding after each end token is left out."""
        return [r.cells() for r in self.rows if r.kind != "pad"]

    def prompt_positions(self) -> tuple[int, ...]:
        """Columns that hold the prompt's own tokens and embedding vectors."""
        return tuple(r.position for r in self.rows if r.kind in ("text", "embedding"))

    def pick(self, text: str, *, field: str = TOKENS_FIELD) -> TokenPick:
        """The columns `text` names (see the module docstring); blank picks every prompt token."""
        items = pick_items(text, field=field)
        if not items:
            every = self.prompt_positions()
            if not every:
                msg = (
                    f"{field}: the prompt has no tokens to pick — type a prompt, or pick columns by number "
                    "(0 is the start token)"
                )
                raise DumpUnetError(msg)
            return TokenPick(every, (("all prompt tokens", every),))
        groups = [(item.source, self.lookup(item, text, field=field)) for item in items]
        chosen = sorted({p for _, ps in groups for p in ps})
        return TokenPick(tuple(chosen), tuple(groups))

    def lookup(self, item: PickItem, text: str, *, field: str = TOKENS_FIELD) -> tuple[int, ...]:
        """The columns of this table that `item` (read from `text` by `pick_items`) names, in order; a `SpecError`
        pointing at the item in `text` when it names none here (a word not in this prompt, a column past its end)."""
        if item.word is None:
            lo, hi = item.span
            if hi >= len(self.rows):
                reason = f"column {hi} is past the end: this prompt has columns 0–{len(self.rows) - 1}"
                raise SpecError(field, text, item.start, reason, item.length)
            return tuple(range(lo, hi + 1))
        found = self._phrase(_key(item.word))
        if not found:
            reason = f"no word {item.word!r} in the prompt; its words are: {self._word_list()}"
            raise SpecError(field, text, item.start, reason, item.length)
        return found

    def _phrase(self, key: str) -> tuple[int, ...]:
        """Columns of every run of consecutive words that spells `key` (spaces ignored)."""
        if not key:
            return ()
        out: list[int] = []
        for i in range(len(self.words)):
            spelled, run = "", []
            for w in self.words[i:]:
                spelled += w.key
                run += w.positions
                if len(spelled) >= len(key):
                    break
            if spelled == key:
                out += run
        return tuple(sorted(set(out)))

    def _word_list(self, limit: int = 24) -> str:
        names = list(dict.fromkeys(w.text for w in self.words if w.key))
        shown = ", ".join(names[:limit])
        return (shown + ", …") if len(names) > limit else (shown or "(none)")


def _fix_positions(chunk) -> dict[int, tuple[str, int]]:
    """Column within the chunk → (embedding name, vector number) for every textual-inversion vector."""
    out: dict[int, tuple[str, int]] = {}
    for fix in getattr(chunk, "fixes", None) or ():
        emb = fix.embedding
        name = str(getattr(emb, "name", "embedding"))
        for v in range(int(emb.vectors)):
            column = fix.offset + 1 + v
            if column < COLUMNS_PER_CHUNK - 1:
                out[column] = (name, v)
    return out


class _WordBuilder:
    """Groups text rows into words: pieces accumulate until one ends with "</w>"."""

    def __init__(self) -> None:
        self.words: list[tuple[list[int], str | None]] = []  # (row indices, fixed name or None)
        self.open_rows: list[int] = []
        self.open_pieces: list[str] = []

    def add(self, row: int, piece: str) -> None:
        self.open_rows.append(row)
        self.open_pieces.append(piece)
        if piece.endswith(_END_OF_WORD):
            self.flush()

    def flush(self) -> None:
        if self.open_rows:
            self.words.append((self.open_rows, _spell("".join(self.open_pieces))))
        self.open_rows, self.open_pieces = [], []

    def embedding(self, name: str) -> int:
        """An embedding's vectors are one word; consecutive vectors of one keyword share it."""
        if self.words and self.words[-1][1] == f"\0{name}":
            return len(self.words) - 1
        self.words.append(([], f"\0{name}"))
        return len(self.words) - 1

    def named(self, rows: list[TokenRow]) -> list[TokenRow]:
        out = list(rows)
        for index, (members, text) in enumerate(self.words):
            for r in members:
                out[r] = _with_word(out[r], text or "", index)
        return out


def _with_word(row: TokenRow, word: str, index: int) -> TokenRow:
    return TokenRow(row.position, row.chunk, row.index, row.token, row.text, row.kind, row.weight, word, index)


def _key(text: str) -> str:
    return "".join(text.lower().split())


def _spans(positions: Sequence[int]) -> str:
    """1,2,3,7 → '1-3, 7'."""
    out: list[str] = []
    run: list[int] = []
    for p in positions:
        if run and p != run[-1] + 1:
            out.append(_span(run))
            run = []
        run.append(p)
    if run:
        out.append(_span(run))
    return ", ".join(out)


def _span(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


# --------------------------------------------------------------------------------------------------------------------
# Byte-level BPE spelling


@functools.cache
def _byte_of_char() -> dict[str, int]:
    """CLIP (like GPT-2) writes each byte as a printable character: printable Latin-1 bytes stand for themselves,
    the other bytes are shifted to code points from 256 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


def _spell(piece: str) -> str:
    """A BPE piece (or several joined) as readable text: "</w>" dropped, bytes decoded as UTF-8."""
    table = _byte_of_char()
    raw = piece.replace(_END_OF_WORD, "")
    if any(ch not in table for ch in raw):
        return raw
    return bytes(table[ch] for ch in raw).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------------------------------
# The pick grammar


@dataclass(frozen=True)
class PickItem:
    """One comma-separated item of a pick text: a word or phrase (`word`), or an inclusive column range (`span`),
    with where it was typed (`start`, `length`) for error carets."""

    source: str
    start: int
    length: int
    word: str | None = None
    span: tuple[int, int] = (0, 0)

    @property
    def label(self) -> str:
        """How to name the item to users: the word (a quoted word without its quotes), or the columns as typed."""
        return self.source.strip('"') if self.word is not None else self.source


_RANGE = re.compile(r"([0-9]+)\s*-\s*([0-9]+)")
_MAX_DIGITS = 7


def pick_items(text: str, *, field: str = TOKENS_FIELD) -> list[PickItem]:
    """Items of a pick text: comma-separated; a double-quoted item may hold commas (`""` is a quote). A blank text
    has none. A text over `MAX_PICK_LENGTH` or one that cannot be read raises (`DumpUnetError`, `SpecError`)."""
    if len(text) > MAX_PICK_LENGTH:
        msg = f"{field} is {len(text):,} characters long; at most {MAX_PICK_LENGTH:,} are allowed — shorten it"
        raise DumpUnetError(msg)
    items: list[PickItem] = []
    pos, n = 0, len(text)
    while pos < n:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            break
        if text[pos] == '"':
            item, pos = _quoted_item(text, pos, field)
        else:
            end = text.find(",", pos)
            end = n if end < 0 else end
            raw = text[pos:end].rstrip()
            item = _plain_item(text, pos, raw, field) if raw else None
            pos = end
        if item is not None:
            items.append(item)
        while pos < n and text[pos].isspace():
            pos += 1
        if pos < n and text[pos] != ",":
            raise SpecError(field, text, pos, "expected a comma between items")
        pos += 1
    return items


def _quoted_item(text: str, pos: int, field: str) -> tuple[PickItem, int]:
    chars: list[str] = []
    i = pos + 1
    while True:
        if i >= len(text):
            raise SpecError(field, text, pos, "this quote is never closed", len(text) - pos)
        if text[i] == '"':
            if text[i + 1 : i + 2] == '"':
                chars.append('"')
                i += 2
                continue
            break
        chars.append(text[i])
        i += 1
    word = "".join(chars)
    if not word.strip():
        raise SpecError(field, text, pos, "empty quotes name no word", i + 1 - pos)
    return PickItem(text[pos : i + 1], pos, i + 1 - pos, word=word), i + 1


def _plain_item(text: str, pos: int, raw: str, field: str) -> PickItem:
    length = len(raw)
    if raw.isascii() and raw.isdigit():
        value = _column(text, pos, raw, field)
        return PickItem(raw, pos, length, span=(value, value))
    m = _RANGE.fullmatch(raw)
    if m:
        lo = _column(text, pos + m.start(1), m.group(1), field)
        hi = _column(text, pos + m.start(2), m.group(2), field)
        if hi < lo:
            raise SpecError(field, text, pos, f"the range {raw} goes backwards; write {hi}-{lo}", length)
        return PickItem(raw, pos, length, span=(lo, hi))
    if raw[0] == "-" and raw[1:].strip().isdigit():
        raise SpecError(field, text, pos, "columns count from 0; negative numbers name no column", length)
    if raw[0].isdigit() and "-" in raw and raw.replace("-", "").replace(" ", "").isdigit():
        raise SpecError(field, text, pos, f"{raw!r} is not a range: write it as A-B, e.g. 3-5", length)
    return PickItem(raw, pos, length, word=raw)


def _column(text: str, pos: int, digits: str, field: str) -> int:
    if len(digits) > _MAX_DIGITS:
        raise SpecError(field, text, pos, "this number is far larger than any prompt", len(digits))
    return int(digits)
