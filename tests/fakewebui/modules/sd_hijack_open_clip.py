"""Mirror of modules/sd_hijack_open_clip.py: the wrappers of OpenCLIP encoders (SD2, SDXL's second encoder).

The real ones tokenize with open_clip's `_tokenizer`; here the same BPE vocabulary is used through the wrapped
encoder's `CLIPTokenizer` (ids are identical for ordinary text). Padding after EOS uses id 0, as OpenCLIP does."""

import torch
from modules import devices, sd_hijack_clip


class FrozenOpenCLIPEmbedderWithCustomWords(sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase):
    def __init__(self, wrapped, hijack):
        super().__init__(wrapped, hijack)
        tokenizer = wrapped.tokenizer
        vocab = tokenizer.get_vocab()

        self.comma_token = vocab[",</w>"]
        self.id_start = tokenizer.bos_token_id
        self.id_end = tokenizer.eos_token_id
        self.id_pad = 0

    def tokenize(self, texts):
        return self.wrapped.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    def encode_with_transformers(self, tokens):
        return self.wrapped.encode_with_transformer(tokens)

    def encode_embedding_init_text(self, init_text, nvpt):
        ids = self.tokenize([init_text])[0]
        ids = torch.asarray([ids], device=devices.device, dtype=torch.int)
        embedded = self.wrapped.transformer.text_model.embeddings.token_embedding.wrapped(ids).squeeze(0)

        return embedded


class FrozenOpenCLIPEmbedder2WithCustomWords(FrozenOpenCLIPEmbedderWithCustomWords):
    def encode_with_transformers(self, tokens):
        d = self.wrapped.encode_with_transformer(tokens)
        z = d[self.wrapped.layer]

        pooled = d.get("pooled")
        if pooled is not None:
            z.pooled = pooled

        return z
