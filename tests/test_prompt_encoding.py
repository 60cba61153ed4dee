"""One set of prompt rules: the library's CLIP encoder (Embedding Estimate, the diffusers front-end, the CLI) cuts
prompts with the token inspector's `chunk_prompt` and encodes them exactly as the webui's hijacked encoder does —
emphasis, BREAK, long prompts and the comma back-tracking of a full chunk."""

from __future__ import annotations

import pytest
import torch
import unets
import webuihelp

from lib_dumpunet.estimate.clip_text import ClipPromptEncoder, ClipTower
from lib_dumpunet.tokens import BpeVocabulary, TokenTable

COMMAS = ", ".join(["one two three four five six"] * 15)  # 104 tokens: chunk 1 ends at a comma, not at token 75


@pytest.fixture(scope="module")
def webui():
    with webuihelp.session(unets.SD1, build_ui=False) as session:
        yield session


def _ours(webui, **kwargs) -> ClipPromptEncoder:
    wrapped = webui.shared.sd_model.cond_stage_model.wrapped
    return ClipPromptEncoder([ClipTower(wrapped.transformer, wrapped.tokenizer)], **kwargs)


@pytest.mark.parametrize(
    "prompt", ["", "a red cat", "a (red:1.4) [cat], BREAK dog", COMMAS, "(unclosed " * 30, "cat " * 80]
)
def test_the_librarys_encoder_equals_the_webuis(webui, prompt):
    with torch.no_grad():
        expected = webui.shared.sd_model.get_learned_conditioning([prompt])[0]
        got = _ours(webui).encode(prompt)[0]
    assert got.shape == expected.shape
    assert torch.equal(got, expected)


def test_a_full_chunk_moves_the_words_after_its_last_comma_on(webui):
    ours = _ours(webui)
    chunks = ours.chunks(COMMAS)
    comma = ours.towers[0].tokenizer.get_vocab()[",</w>"]
    assert chunks[0].tokens[1:].index(ours.towers[0].tokenizer.eos_token_id) < 75  # cut early …
    last = max(i for i, t in enumerate(chunks[0].tokens) if t == comma)
    assert chunks[0].tokens[last + 1] == ours.towers[0].tokenizer.eos_token_id  # … right after a comma
    without = _ours(webui, comma_backtrack=0)
    with torch.no_grad():
        assert not torch.equal(without.encode(COMMAS), ours.encode(COMMAS))
    table = TokenTable.from_chunks(chunks, BpeVocabulary.of(ours.towers[0].tokenizer))
    assert len(table) == 154
    assert table.rows[77].text == "<start>" and table.rows[78].text == "one"
