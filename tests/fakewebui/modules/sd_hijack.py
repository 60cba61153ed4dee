"""Mirror of modules/sd_hijack.py, reduced to `model_hijack` (the wrapping of text encoders, embedding fixes,
comments, extra infotext params) and `EmbeddingsWithFixes`. Cross-attention optimisations are not swapped in: the
fake always runs ldm's own attention (the webui's "None"/Doggettx paths compute the same values)."""

import torch
from modules import devices, sd_hijack_clip, sd_hijack_open_clip
from modules.textual_inversion import textual_inversion


class EmbeddingsWithFixes(torch.nn.Module):
    """The token-embedding layer of a text encoder, splicing textual-inversion vectors in at `fixes`."""

    def __init__(self, wrapped, embeddings, textual_inversion_key="clip_l"):
        super().__init__()
        self.wrapped = wrapped
        self.embeddings = embeddings
        self.textual_inversion_key = textual_inversion_key
        self.weight = self.wrapped.weight

    def forward(self, input_ids):
        batch_fixes = self.embeddings.fixes
        self.embeddings.fixes = None

        inputs_embeds = self.wrapped(input_ids)

        if batch_fixes is None or len(batch_fixes) == 0 or max([len(x) for x in batch_fixes]) == 0:
            return inputs_embeds

        vecs = []
        for fixes, tensor in zip(batch_fixes, inputs_embeds, strict=True):
            for offset, embedding in fixes:
                vec = embedding.vec[self.textual_inversion_key] if isinstance(embedding.vec, dict) else embedding.vec
                emb = devices.cond_cast_unet(vec)
                emb_len = min(tensor.shape[0] - offset - 1, emb.shape[0])
                tensor = torch.cat([tensor[0 : offset + 1], emb[0:emb_len], tensor[offset + 1 + emb_len :]]).to(
                    dtype=inputs_embeds.dtype
                )

            vecs.append(tensor)

        return torch.stack(vecs)


def _wrap_token_embedding(encoder, hijack, key):
    embeddings = encoder.transformer.text_model.embeddings
    if not isinstance(embeddings.token_embedding, EmbeddingsWithFixes):
        embeddings.token_embedding = EmbeddingsWithFixes(embeddings.token_embedding, hijack, key)


class StableDiffusionModelHijack:
    fixes = None
    layers = None
    circular_enabled = False
    clip = None
    optimization_method = None

    def __init__(self):
        self.extra_generation_params = {}
        self.comments = []
        self.embedding_db = textual_inversion.EmbeddingDatabase()

    def apply_optimizations(self, option=None):
        self.optimization_method = "None"

    def hijack(self, m):
        conditioner = getattr(m, "conditioner", None)
        if conditioner:
            text_cond_models = []

            for i in range(len(conditioner.embedders)):
                embedder = conditioner.embedders[i]
                typename = type(embedder).__name__
                if typename == "FrozenCLIPEmbedder":
                    _wrap_token_embedding(embedder, self, "clip_l")
                    conditioner.embedders[i] = sd_hijack_clip.FrozenCLIPEmbedderForSDXLWithCustomWords(embedder, self)
                    text_cond_models.append(conditioner.embedders[i])
                if typename == "FrozenOpenCLIPEmbedder2":
                    _wrap_token_embedding(embedder, self, "clip_g")
                    conditioner.embedders[i] = sd_hijack_open_clip.FrozenOpenCLIPEmbedder2WithCustomWords(
                        embedder, self
                    )
                    text_cond_models.append(conditioner.embedders[i])

            if len(text_cond_models) == 1:
                m.cond_stage_model = text_cond_models[0]
            else:
                m.cond_stage_model = conditioner

        typename = type(m.cond_stage_model).__name__
        if typename == "FrozenCLIPEmbedder":
            _wrap_token_embedding(m.cond_stage_model, self, "clip_l")
            m.cond_stage_model = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(m.cond_stage_model, self)
        elif typename == "FrozenOpenCLIPEmbedder":
            _wrap_token_embedding(m.cond_stage_model, self, "clip_l")
            m.cond_stage_model = sd_hijack_open_clip.FrozenOpenCLIPEmbedderWithCustomWords(m.cond_stage_model, self)

        self.apply_optimizations()
        self.clip = m.cond_stage_model

    def undo_hijack(self, m):
        pass

    def apply_circular(self, enable):
        self.circular_enabled = enable

    def clear_comments(self):
        self.comments = []
        self.extra_generation_params = {}

    def get_prompt_lengths(self, text):
        if self.clip is None:
            return "-", "-"

        if hasattr(self.clip, "get_token_count"):
            token_count = self.clip.get_token_count(text)
        else:
            _, token_count = self.clip.process_texts([text])

        return token_count, self.clip.get_target_prompt_token_count(token_count)

    def redo_hijack(self, m):
        self.undo_hijack(m)
        self.hijack(m)


model_hijack = StableDiffusionModelHijack()
