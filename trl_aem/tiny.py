"""Small models and tokenizers built offline, for tests, demos and benchmarks.

Nothing here downloads anything: the tokenizer is a byte-level BPE trained in a fraction of a second
on a text corpus and wrapped as a ``PreTrainedTokenizerFast`` with a ChatML chat template; the model is
a randomly initialised Qwen2-style causal LM. ``initializer_range`` defaults to 0.2 because at the usual
0.02 every token distribution is nearly uniform, all response entropies are equal and AEM's noise guard
(rightly) keeps alpha at 1.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

__all__ = ["CHATML_TEMPLATE", "DEFAULT_CORPUS", "build_tokenizer", "build_model"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

DEFAULT_CORPUS = [
    "You are an agent. Think step by step, then act.",
    "<think>I should look around first.</think><action>look</action>",
    "<think>The apple is on the table.</think><action>take apple from table 1</action>",
    "go to countertop 1",
    "open fridge 1",
    "put apple in/on fridge 1",
    "examine drawer 2",
    "search[red shoes under 40 dollars]",
    "click[buy now]",
    "click[< prev]",
    "click[description]",
    "Your task is to: put a clean mug in the coffeemachine.",
    "You arrive at the kitchen. On the countertop 1, you see a knife 1, a mug 2, and a bread 1.",
    "Nothing happens. You won! The answer is 42. Reward: 1.0",
    "def add(a, b):\n    return a + b\n",
    "assert add(1, 2) == 3",
    "pytest -q tests/",
    "submit",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + - * / = < > ( ) [ ] { } , . : ; ! ?",
    "the a an of to in on with for and or not is are was be this that it you I we they",
]


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with ChatML special tokens (about 0.2 s).

    Byte-level BPE covers every string, so text outside the corpus still tokenizes (into more pieces).
    ``eos_token`` is ``<|im_end|>`` (the end of an assistant turn), ``pad_token`` is ``<|endoftext|>``
    and padding is on the left, as GRPO generation expects.
    """
    texts = list(corpus) if corpus is not None else list(DEFAULT_CORPUS)
    tok = Tokenizer(models.BPE())
    # Qwen2's normalizer and pre-tokenizer (digits one by one): the model is a Qwen2, so a folder holding both
    # reloads the tokenizer as transformers' Qwen2Tokenizer, which imposes these; trained with anything else the
    # reloaded tokenizer would split text differently from the one the model was trained with
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
    initializer_range: float = 0.2,
    seed: int = 0,
) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2-style causal LM sized for ``tokenizer`` (float32, eval mode off)."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
