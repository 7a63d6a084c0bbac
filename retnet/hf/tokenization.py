"""retnet's tokenizers as ``transformers`` ``PreTrainedTokenizerFast`` objects, and back.

Both retnet tokenizers become a ``tokenizers`` byte-level BPE, so ``AutoTokenizer`` loads a saved directory with
no retnet code: the BPE tokenizer is its own ``tokenizers`` object; the byte tokenizer (ids 0..255 = UTF-8 bytes,
256 = the separator) is a byte-level BPE whose vocabulary maps the printable stand-in character of byte b to id b
and that has no merges, so it encodes every byte to its own id. The separator ``<|endoftext|>`` is the
end-of-sequence and padding token; padding goes on the left, as generation needs.
"""

from __future__ import annotations

import json

from transformers import PreTrainedTokenizerFast

from ..data.tokenizer import SEPARATOR, BPETokenizer, ByteTokenizer, Tokenizer


def byte_level_alphabet() -> list[str]:
    """The character that byte-level BPE uses for each byte 0..255 (GPT-2's reversible byte-to-unicode table).

    Printable Latin-1 bytes stand for themselves; the other bytes (controls, space, soft hyphen) take the code
    points from 256 upwards, in byte order.
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _byte_backend():
    """A ``tokenizers.Tokenizer`` equal to :class:`ByteTokenizer` (see the module docstring)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {c: b for b, c in enumerate(byte_level_alphabet())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(SEPARATOR, special=True, normalized=False)])
    return tok


def to_hf_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The ``PreTrainedTokenizerFast`` that encodes and decodes as ``tokenizer`` does.

    Raises:
        TypeError: a tokenizer of another kind.
        ValueError: an export whose vocabulary size differs from ``tokenizer.vocab_size``.
    """
    if isinstance(tokenizer, ByteTokenizer):
        backend = _byte_backend()
    elif isinstance(tokenizer, BPETokenizer):
        from tokenizers import Tokenizer as Backend

        backend = Backend.from_str(tokenizer.to_json())
    else:
        raise TypeError(f"tokenizer must be a retnet ByteTokenizer or BPETokenizer, got {type(tokenizer).__name__}")
    hf = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=SEPARATOR,
        pad_token=SEPARATOR,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        # The byte tokenizer spells the separator's text as bytes; only the BPE one maps it to the token.
        split_special_tokens=isinstance(tokenizer, ByteTokenizer),
    )
    if len(hf) != tokenizer.vocab_size:
        raise ValueError(f"exported tokenizer has {len(hf)} tokens, the retnet tokenizer {tokenizer.vocab_size}")
    return hf


def from_hf_tokenizer(hf: PreTrainedTokenizerFast) -> Tokenizer:
    """The retnet tokenizer behind a tokenizer made by :func:`to_hf_tokenizer` (or any byte-level BPE that has the
    separator token).

    Raises:
        TypeError: a tokenizer without a ``tokenizers`` backend.
        ValueError: a backend without the separator token.
    """
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"expected a fast tokenizer with a tokenizers backend, got {type(hf).__name__}")
    spec = json.loads(backend.to_str())
    if _is_byte_backend(spec, backend):
        return ByteTokenizer()
    if _is_identity_template(spec.get("post_processor")):
        spec["post_processor"] = None  # transformers adds this no-op template; retnet's BPE has none
    return BPETokenizer.from_json(json.dumps(spec, ensure_ascii=False))


def _is_identity_template(processor) -> bool:
    """A ``TemplateProcessing`` that adds no special tokens (the sequence, or the pair, as given)."""
    if not isinstance(processor, dict) or processor.get("type") != "TemplateProcessing":
        return False
    single = [{"Sequence": {"id": "A", "type_id": 0}}]
    pair = single + [{"Sequence": {"id": "B", "type_id": 1}}]
    return processor.get("single") == single and processor.get("pair") == pair and not processor.get("special_tokens")


def _is_byte_backend(spec: dict, backend) -> bool:
    """Whether ``backend`` is the export of :class:`ByteTokenizer`: the byte vocabulary, no merges, the separator."""
    model = spec.get("model", {})
    vocab = {c: b for b, c in enumerate(byte_level_alphabet())}
    return (
        model.get("type") == "BPE"
        and not model.get("merges")
        and model.get("vocab") == vocab
        and backend.token_to_id(SEPARATOR) == 256
        and backend.get_vocab_size() == 257
    )
