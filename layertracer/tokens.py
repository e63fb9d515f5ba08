"""Token text a reader can read, in every script.

Byte-level BPE (GPT-2, Qwen, Llama 3) splits a Chinese character into pieces of its UTF-8 bytes, and
``tokenizer.decode([id])`` of such a piece is "�". Here a token is taken as its bytes and shown as
text where the bytes form whole characters, and as ``<0xE5>``-style escapes where they do not (never
"�"). Along a prompt (``readable_sequence``) the pieces of one character are merged: the piece that
completes it shows the character, the pieces before it their bytes.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Sequence

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # sentencepiece's byte fallback


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte, inverted."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return {char: byte for byte, char in enumerate(chars)}


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None) if backend is not None else None
    return decoder is not None and "ByteLevel" in repr(decoder)


def token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """The bytes a token stands for (for a byte-level BPE tokenizer, through GPT-2's byte alphabet)."""
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)  # every HF tokenizer; a plain one may lack it
    piece = convert(int(token_id)) if convert is not None else None
    if isinstance(piece, str):
        match = _BYTE_TOKEN.match(piece)
        if match:
            return bytes([int(match.group(1), 16)])
        if _is_byte_level(tokenizer):
            table = _byte_decoder()
            if all(char in table for char in piece):
                return bytes(table[char] for char in piece)
    return tokenizer.decode([int(token_id)]).encode("utf-8", errors="surrogatepass")


def readable(data: bytes) -> str:
    """Bytes as text: whole UTF-8 characters as themselves, any other byte as ``<0xNN>``."""
    out, start = [], 0
    while start < len(data):
        try:
            out.append(data[start:].decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            out.append(data[start:start + exc.start].decode("utf-8"))
            bad = data[start + exc.start:start + max(exc.end, exc.start + 1)]
            out.append("".join(f"<0x{b:02X}>" for b in bad))
            start += max(exc.end, exc.start + 1)
    return "".join(out)


def readable_token(tokenizer: Any, token_id: int) -> str:
    """One token on its own (a top-k cell, a target): its text, or escapes for partial characters."""
    return readable(token_bytes(tokenizer, token_id))


def _complete_prefix(data: bytes) -> int:
    """The length of the longest prefix of ``data`` that does not end inside a UTF-8 character."""
    end = len(data)
    for back in range(1, min(4, end) + 1):
        byte = data[end - back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): does its character fit?
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
            return end if back >= need else end - back
    return end


def readable_sequence(tokenizer: Any, token_ids: Sequence[int]) -> list[str]:
    """The tokens of a prompt, one label each: a piece that completes a character shows the whole
    character (with the pieces merged), a piece that leaves one unfinished shows its own bytes."""
    labels, pending = [], b""
    for token_id in token_ids:
        own = token_bytes(tokenizer, token_id)
        data = pending + own
        cut = _complete_prefix(data)
        # nothing completes here: the piece's own bytes; else what completes (merged with the pieces
        # before it), then the bytes left unfinished for the next piece
        labels.append(readable(own) if cut == 0 else readable(data[:cut]) + readable(data[cut:]))
        pending = data[cut:]
    return labels
