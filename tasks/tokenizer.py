"""A character-level tokenizer saved with each checkpoint as a PreTrainedTokenizerFast.

One token per character, so token counts equal character counts and decoding gives back
the exact text (no spaces inserted). ``<s>`` is added in front of every encoded text.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

__all__ = ["CHARS", "SPECIAL_TOKENS", "build_tokenizer"]

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
# Digits, operators and the punctuation of the CountDown formats, plus letters so that
# other synthetic tasks can reuse the same vocabulary.
CHARS = (
    "0123456789+-*/=()<>[]{}|:;,.!?#@$%&^_~'\" \n"
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def build_tokenizer(chars: str = CHARS) -> PreTrainedTokenizerFast:
    """Builds the character tokenizer.

    Args:
        chars: The vocabulary; any other character encodes as ``<unk>``.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in dict.fromkeys(chars):
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # "." does not match a newline in Oniguruma; "[\s\S]" matches every character.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
