"""Textual-inversion files as the webui's embedding loader reads them, written safely into the embeddings folder.

The webui names an embedding by its file's stem, scans the embeddings folder and its subfolders, and accepts three
layouts: a `.pt` dict with `string_to_param = {"*": (N, C)}` (plus `name`, `step`, `sd_checkpoint`,
`sd_checkpoint_name`, `string_to_token`), a dict `{"clip_l": (N, 768), "clip_g": (N, 1280)}` for SDXL, or a dict with a
single tensor (the "diffusers concept" layout, the only one a `.safetensors` file can hold for SD1/SD2, since it stores
tensors only). `.pt` files go through the webui's restricted unpickler, so they hold only plain CPU tensors, text,
numbers and None. The user's name must be a plain file name (letters, digits, `._- `), never a path, and an existing
embedding of that name is replaced only when asked. Files are written to a temporary name first and then renamed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from lib_dumpunet.errors import DumpUnetError
from lib_dumpunet.estimate.model import SDXL_PARTS, SINGLE_PART, Vectors

__all__ = [
    "EMBEDDING_SUFFIXES",
    "MAX_NAME_LENGTH",
    "SUBFOLDER",
    "SavedEmbedding",
    "check_name",
    "embedding_payload",
    "read_embedding",
    "write_embedding",
]

log = logging.getLogger(__name__)

SUBFOLDER = "dumpunet-estimate"
MAX_NAME_LENGTH = 100
EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors", ".png", ".webp", ".jxl", ".avif")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_SAFETENSORS_KEY = "emb_params"


@dataclass(frozen=True)
class SavedEmbedding:
    path: Path
    name: str  # the prompt word: the file's stem
    vectors: int
    replaced: tuple[Path, ...]  # files that held this name before


def check_name(name: str) -> str:
    """The name as it will be used (surrounding spaces removed), or a DumpUnetError saying what is wrong."""
    stripped = name.strip()
    if not stripped:
        raise DumpUnetError("Save name is empty: write the word the embedding is to be used by.")
    if len(stripped) > MAX_NAME_LENGTH:
        raise DumpUnetError(f"Save name is longer than {MAX_NAME_LENGTH} characters.")
    if "/" in stripped or "\\" in stripped or ".." in stripped:
        raise DumpUnetError(f"Save name '{stripped}' looks like a path: use a plain name, without '/', '\\' or '..'.")
    bad = sorted({c for c in stripped if not (c.isalnum() or c in "._- ")})
    if bad:
        raise DumpUnetError(f"Save name may hold letters, digits, '.', '_', '-' and spaces only, not {' '.join(bad)}")
    if stripped.startswith("."):
        raise DumpUnetError("Save name must not start with '.' (the webui skips hidden files).")
    if stripped.split(".")[0].lower() in _RESERVED:
        raise DumpUnetError(f"Save name '{stripped}' is a reserved device name on Windows.")
    return stripped


def embedding_payload(vectors: Vectors, name: str, step: int, file_format: str, checkpoint: tuple[str, str] | None):
    """What goes into the file: (tensors-or-dict, safetensors metadata)."""
    plain = {part: v.detach().to("cpu", torch.float32).contiguous().clone() for part, v in vectors.items()}
    if set(plain) == set(SDXL_PARTS):
        return plain, {"name": name, "step": str(step)}
    if set(plain) != {SINGLE_PART}:
        raise DumpUnetError(f"Cannot store embedding parts {sorted(plain)}: expected '*' or clip_l + clip_g.")
    if file_format == "safetensors":
        return {_SAFETENSORS_KEY: plain[SINGLE_PART]}, {"name": name, "step": str(step)}
    return {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": plain[SINGLE_PART]},
        "name": name,
        "step": step,
        "sd_checkpoint": checkpoint[0] if checkpoint else None,
        "sd_checkpoint_name": checkpoint[1] if checkpoint else None,
    }, None


def _holders(folder: Path, name: str) -> list[Path]:
    """Every file under `folder` the webui would load as embedding `name`."""
    if not folder.is_dir():
        return []
    found = []
    for root, _dirs, files in os.walk(folder, followlinks=True):
        for file in files:
            path = Path(root) / file
            if path.stem == name and path.suffix.lower() in EMBEDDING_SUFFIXES:
                found.append(path)
    return sorted(found)


def _inside(folder: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def target_path(folder: Path, name: str, file_format: str, *, overwrite: bool) -> tuple[Path, list[Path]]:
    """Where `name` goes, and which existing files it replaces; raises if it would replace without being asked."""
    name = check_name(name)
    if file_format not in ("safetensors", "pt"):
        raise DumpUnetError(f"File format must be 'safetensors' or 'pt', not '{file_format}'.")
    path = folder / SUBFOLDER / f"{name}.{file_format}"
    if not _inside(folder, path):
        raise DumpUnetError(f"Save name '{name}' would leave the embeddings folder.")
    holders = _holders(folder, name)
    if holders and not overwrite:
        listed = ", ".join(str(h.relative_to(folder)) for h in holders)
        raise DumpUnetError(f"An embedding named '{name}' exists ({listed}): tick 'Overwrite' or choose another name.")
    elsewhere = [h for h in holders if h.parent.resolve() != path.parent.resolve()]
    if elsewhere:
        listed = ", ".join(str(h.relative_to(folder)) for h in elsewhere)
        raise DumpUnetError(
            f"An embedding named '{name}' exists outside {SUBFOLDER}/ ({listed}); it is not replaced from here: "
            "choose another name."
        )
    return path, holders


def write_embedding(
    folder: str | Path,
    name: str,
    vectors: Vectors,
    *,
    step: int,
    file_format: str = "safetensors",
    overwrite: bool = False,
    checkpoint: tuple[str, str] | None = None,
) -> SavedEmbedding:
    """Write `vectors` as embedding `name` under `folder` (the webui's embeddings folder), atomically."""
    folder = Path(folder)
    path, holders = target_path(folder, name, file_format, overwrite=overwrite)
    payload, metadata = embedding_payload(vectors, path.stem, step, file_format, checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=".estimate-", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        if file_format == "safetensors":
            from safetensors.torch import save_file

            save_file(payload, str(temp), metadata=metadata)
        else:
            torch.save(payload, temp)
        for old in holders:
            if old != path:
                old.unlink()
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
    log.info("Saved embedding %s (%d vectors) to %s", path.stem, _count(vectors), path)
    return SavedEmbedding(path=path, name=path.stem, vectors=_count(vectors), replaced=tuple(holders))


def _count(vectors: Vectors) -> int:
    return int(next(iter(vectors.values())).shape[0])


def read_embedding(path: str | Path) -> Vectors:
    """Vectors of a textual-inversion file, by the rules the webui's loader follows (tensors only are unpickled)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        data = load_file(str(path), device="cpu")
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict) and "string_to_param" in data:
        params = data["string_to_param"]
        if len(params) != 1:
            raise DumpUnetError(f"{path.name} holds several terms; an embedding file holds one.")
        return {SINGLE_PART: next(iter(params.values())).float()}
    if isinstance(data, dict) and set(SDXL_PARTS) <= set(data):
        return {part: data[part].float() for part in SDXL_PARTS}
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
        vec = next(iter(data.values())).float()
        return {SINGLE_PART: vec[None] if vec.ndim == 1 else vec}
    raise DumpUnetError(f"{path.name} is not a textual-inversion embedding the webui can read.")
