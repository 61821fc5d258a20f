"""Offline stand-ins for the Hub models and datasets that TRL's GRPO test module loads.

TRL's tests call ``from_pretrained("trl-internal-testing/tiny-...")`` and ``load_dataset("trl-internal-testing/zen",
...)``. Nothing can be downloaded here, so this module builds equivalents on the spot:

* **Models**: randomly initialised models of the same architectures (Qwen2, Qwen3, Qwen3-MoE, Gemma2, Llama, Mistral
  causal LMs; Qwen2/Qwen3/Llama sequence classifiers; Qwen2-VL, Qwen2.5-VL, Gemma3 and LLaVA-NeXT vision-language
  models), written into a Hugging Face cache layout (``<HF_HOME>/hub/models--org--name/snapshots/<sha>`` plus
  ``refs/main``) so that ``from_pretrained("org/name")`` resolves with ``HF_HUB_OFFLINE=1`` and nothing patched.
* **Tokenizers**: the Qwen-family tokenizer has Qwen's real layout where the tests depend on it: 151,643 regular
  tokens (the 256 byte-level symbols at GPT-2's ids, a few multi-character tokens at the ids the upstream tool tests
  feed through a mocked ``generate``, BPE merges learnt on the spot from the text the tests use, unique fillers
  elsewhere) followed by Qwen's special tokens at their ids
  (``<|endoftext|>`` 151643, ``<|im_end|>`` 151645, ``<tool_call>`` 151657, ...). Chat templates are the ones the
  installed TRL ships (``trl/chat_templates/*.jinja``), read at build time, so TRL recognises them (tool-call
  parsing, ``enable_thinking``). Other families get a small byte-level BPE trained on the spot with their special
  tokens.
* **Datasets**: ``zen`` (standard / conversational; prompt-only, prompt-completion, language-modeling),
  ``zen-image`` and ``zen-multi-image`` (conversational prompt-only with PIL images), served by a replacement of
  ``datasets.load_dataset`` (:func:`install_dataset_patch`).

Everything is built once into a cache directory keyed by this file's contents and the library versions
(:func:`ensure_hub`); later sessions reuse it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORG = "trl-internal-testing"
FAKE_COMMIT = "0" * 39 + "1"

# --------------------------------------------------------------------------------------------------------- datasets

# The Zen of Python split into (prompt, completion). The test module checks the first twelve prompts verbatim (it
# asserts the content of the first two generation batches), so those prefixes are the upstream ones; the rest is
# an arbitrary split of the remaining lines. 17 train rows, 2 test rows.
ZEN_LINES: list[tuple[str, str]] = [
    ("Beautiful is better than", " ugly."),
    ("Explicit is", " better than implicit."),
    ("Simple is better", " than complex."),
    ("Complex", " is better than complicated."),
    ("Flat is better than", " nested."),
    ("Sparse is better", " than dense."),
    ("Readability", " counts."),
    ("Special cases aren't special", " enough to break the rules."),
    ("Although practicality beats", " purity."),
    ("Errors should never", " pass silently."),
    ("Unless explicitly", " silenced."),
    ("In the face of ambiguity, refuse", " the temptation to guess."),
    ("There should be one-- and preferably", " only one --obvious way to do it."),
    ("Although that way may not be", " obvious at first unless you're Dutch."),
    ("Now is better", " than never."),
    ("Although never is often better than", " *right* now."),
    ("If the implementation is hard to explain,", " it's a bad idea."),
    ("If the implementation is easy to explain,", " it may be a good idea."),
    ("Namespaces are one honking great idea --", " let's do more of those!"),
]
ZEN_TRAIN_ROWS = 17


def _zen_rows(config: str, lines: list[tuple[str, str]]) -> dict[str, list]:
    """Columns of one ``zen`` configuration (TRL's dataset formats) for the given (prompt, completion) pairs."""
    prompts = [p for p, _ in lines]
    completions = [c for _, c in lines]

    def user(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"Finish this line of the Zen of Python: {text}"}]

    def assistant(text: str) -> list[dict[str, str]]:
        return [{"role": "assistant", "content": text.strip()}]

    if config == "standard_prompt_only":
        return {"prompt": prompts}
    if config == "conversational_prompt_only":
        return {"prompt": [user(p) for p in prompts]}
    if config == "standard_prompt_completion":
        return {"prompt": prompts, "completion": completions}
    if config == "conversational_prompt_completion":
        return {"prompt": [user(p) for p in prompts], "completion": [assistant(c) for c in completions]}
    if config == "standard_language_modeling":
        return {"text": [p + c for p, c in lines]}
    if config == "conversational_language_modeling":
        return {"messages": [user(p) + assistant(c) for p, c in lines]}
    raise ValueError(f"offline zen dataset: configuration {config!r} is not provided by the trl_compat harness")


def _solid_image(index: int, size: int = 32):
    """A small deterministic RGB image (a colour gradient) for the image datasets."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    base = rng.integers(0, 255, size=3)
    ramp = np.linspace(0, 60, size, dtype=np.float64)
    pixels = (base[None, None, :] + ramp[:, None, None] + ramp[None, :, None]) % 256
    return Image.fromarray(pixels.astype("uint8"), mode="RGB")


def _zen_image_rows(config: str, lines: list[tuple[str, str]], offset: int, images_per_row: int) -> dict[str, list]:
    if config != "conversational_prompt_only":
        raise ValueError(f"offline zen-image dataset: configuration {config!r} is not provided by the harness")
    prompts, images = [], []
    for i, (prompt, _) in enumerate(lines):
        content = [{"type": "image"} for _ in range(images_per_row)]
        content.append({"type": "text", "text": f"What does the picture say? {prompt}"})
        prompts.append([{"role": "user", "content": content}])
        row_images = [_solid_image(offset + i * images_per_row + k) for k in range(images_per_row)]
        images.append(row_images[0] if images_per_row == 1 else row_images)
    column = "image" if images_per_row == 1 else "images"
    return {"prompt": prompts, column: images}


def offline_dataset(path: str, name: str | None = None, split: str | None = None):
    """The harness's stand-in for ``load_dataset(path, name, split=split)`` of TRL's test datasets."""
    from datasets import Dataset, DatasetDict

    if name is None:
        raise ValueError(f"offline dataset {path!r}: a configuration name is required")
    parts = {"train": ZEN_LINES[:ZEN_TRAIN_ROWS], "test": ZEN_LINES[ZEN_TRAIN_ROWS:]}
    offsets = {"train": 0, "test": 1000}
    builders: dict[str, Callable[[str, list, int], dict[str, list]]] = {
        f"{ORG}/zen": lambda cfg, lines, off: _zen_rows(cfg, lines),
        f"{ORG}/zen-image": lambda cfg, lines, off: _zen_image_rows(cfg, lines, off, 1),
        f"{ORG}/zen-multi-image": lambda cfg, lines, off: _zen_image_rows(cfg, lines, off, 2),
    }
    if path not in builders:
        raise ValueError(f"offline dataset {path!r} is not provided by the trl_compat harness")
    built = DatasetDict(
        {part: Dataset.from_dict(builders[path](name, lines, offsets[part])) for part, lines in parts.items()}
    )
    if split is None:
        return built
    if split not in built:
        raise ValueError(f"offline dataset {path!r}: unknown split {split!r}")
    return built[split]


def install_dataset_patch() -> None:
    """Route ``datasets.load_dataset`` for ``trl-internal-testing/*`` to :func:`offline_dataset` (other paths go to
    the real function). Call before the test module runs ``from datasets import load_dataset``."""
    import datasets

    original = datasets.load_dataset
    if getattr(original, "_trl_compat", False):
        return

    def load_dataset(path, name=None, *args, split=None, **kwargs):
        if isinstance(path, str) and path.startswith(f"{ORG}/"):
            return offline_dataset(path, name, split)
        return original(path, name, *args, split=split, **kwargs)

    load_dataset._trl_compat = True  # type: ignore[attr-defined]
    datasets.load_dataset = load_dataset


# ------------------------------------------------------------------------------------------------------- tokenizers

QWEN_REGULAR_TOKENS = 151_643
QWEN25_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
QWEN3_EXTRA_SPECIALS = ["<tool_response>", "</tool_response>", "<think>", "</think>"]
# Not "special" in Qwen's tokenizer (they are kept when decoding with skip_special_tokens=True).
QWEN_NON_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}

# Multi-character tokens placed at the ids that TRL's tool tests hard-code (they decode ids of Qwen's vocabulary).
QWEN_FIXED_TOKENS: dict[int, str] = {
    606: "name",
    330: ' "',
    497: '",',
    788: '":',
    894: " any",
    944: "'t",
    1414: " know",
    1513: " don",
    4913: '{"',
    5212: ' {"',
    5392: " tool",
    7692: "async",
    11248: "}}\n",
    16370: "arguments",
    17453: "Done",
    22785: "_tool",
    64648: "multiply",
    93054: "_multiply",
}


def _byte_order() -> tuple[list[int], list[str]]:
    """GPT-2's byte-level table in id order: the bytes and the symbols that stand for them. Printable Latin-1 bytes
    come first and keep their own code point; every other byte ``b`` is the ``n``-th such byte and becomes
    ``chr(256 + n)``. Qwen and Llama-3 vocabularies start with these 256 symbols at these ids."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1)]
    printable += list(range(ord("\u00ae"), ord("\u00ff") + 1))
    order, symbols = list(printable), [chr(b) for b in printable]
    for byte in range(256):
        if byte not in printable:
            symbols.append(chr(256 + len(order) - len(printable)))
            order.append(byte)
    return order, symbols


def byte_level_alphabet() -> list[str]:
    """The 256 byte-level symbols; the symbol at index ``i`` is token id ``i`` of a GPT-2-style vocabulary."""
    return _byte_order()[1]


def _to_byte_level(text: str) -> str:
    order, symbols = _byte_order()
    table = dict(zip(order, symbols, strict=True))
    return "".join(table[b] for b in text.encode("utf-8"))


def _filler_tokens(alphabet: list[str], taken: set[str]) -> Iterator[str]:
    """Unique multi-symbol strings (2, then 3 byte-level symbols) not in ``taken``: decodable, never produced by
    encoding (there are no merges), only ever sampled by a random model."""
    for a in alphabet:
        for b in alphabet:
            if a + b not in taken:
                yield a + b
    for a in alphabet:
        for b in alphabet:
            for c in alphabet:
                if a + b + c not in taken:
                    yield a + b + c


# Text the Qwen stand-ins see most (chat-template boilerplate, a tool schema, the datasets), for their BPE merges.
QWEN_MERGE_CORPUS = [
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function "
    "signatures within <tools></tools> XML tags:\n<tools>\n",
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n',
    '{"type": "function", "function": {"name": "multiply_tool", "description": "Multiplies two integers.", '
    '"parameters": {"type": "object", "properties": {"a": {"type": "integer", "description": "The first integer."}, '
    '"b": {"type": "integer", "description": "The second integer."}}, "required": ["a", "b"]}, "return": {"type": '
    '"integer", "description": "The product of the two integers."}}}',
    "<tool_response>\n12\n</tool_response>\nuser\nassistant\nsystem\n<think>\n\n</think>\n\n",
    "Finish this line of the Zen of Python: What does the picture say? ",
]


@functools.lru_cache(maxsize=1)
def _qwen_merges(vocab_size: int = 3000) -> tuple[list[str], list[tuple[str, str]]]:
    """Multi-symbol tokens and merges of a byte-level BPE trained (in about a second) on the text these tests feed
    the Qwen stand-ins. Without merges every byte is a token: prompts get several times longer than with Qwen's real
    tokenizer, and TRL's CPU path scores the LM head over every prompt position, so the runs get slower in proportion.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    corpus = QWEN_MERGE_CORPUS + [p + c for p, c in ZEN_LINES] + small_corpus()
    backend.train_from_iterator(corpus * 8, trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokens = sorted((t for t in model["vocab"] if len(t) > 1), key=model["vocab"].get)
    return tokens, merges


def build_qwen_tokenizer(chat_template: str, specials: list[str]):
    """A Qwen-layout tokenizer (see the module docstring); ``eos`` is ``<|im_end|>``, ``pad`` ``<|endoftext|>``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = byte_level_alphabet()
    vocab: dict[str, int] = {symbol: i for i, symbol in enumerate(alphabet)}
    for token_id, text in QWEN_FIXED_TOKENS.items():
        vocab[_to_byte_level(text)] = token_id
    merged_tokens, merges = _qwen_merges()
    taken = set(vocab.values())
    free_ids = (i for i in range(len(alphabet), QWEN_REGULAR_TOKENS) if i not in taken)
    for token in merged_tokens:  # a merged token equal to a fixed one keeps the fixed (Qwen) id
        if token not in vocab:
            vocab[token] = next(free_ids)
    used_ids = set(vocab.values())
    fillers = _filler_tokens(alphabet, set(vocab))
    for token_id in range(QWEN_REGULAR_TOKENS):
        if token_id not in used_ids:
            vocab[next(fillers)] = token_id
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_tokens([AddedToken(t, special=t not in QWEN_NON_SPECIAL, normalized=False) for t in specials])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    extra = [t for t in specials if t not in QWEN_NON_SPECIAL and t not in ("<|im_end|>", "<|endoftext|>")]
    tokenizer.add_special_tokens({"additional_special_tokens": extra})
    tokenizer.chat_template = chat_template
    if tokenizer.convert_tokens_to_ids("<|endoftext|>") != QWEN_REGULAR_TOKENS:
        raise RuntimeError("offline Qwen tokenizer: special tokens did not land at Qwen's ids")
    return tokenizer


def small_corpus() -> list[str]:
    from trl_aem.tiny import DEFAULT_CORPUS

    return [p + c for p, c in ZEN_LINES] + list(DEFAULT_CORPUS)


def build_small_tokenizer(
    specials: list[str],
    *,
    bos: str | None,
    eos: str,
    pad: str | None,
    unk: str | None = None,
    chat_template: str,
    vocab_size: int = 1024,
    named_specials: dict[str, str] | None = None,
):
    """A byte-level BPE trained on a small corpus in well under a second, with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(small_corpus() * 4, trainer=trainer)
    named = dict(named_specials or {})
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        model_max_length=8192,
        **({"extra_special_tokens": named} if named else {}),
    )
    extra = [t for t in specials if t not in {bos, eos, pad, unk, *named.values()}]
    tokenizer.add_special_tokens({"additional_special_tokens": extra})
    tokenizer.chat_template = chat_template
    return tokenizer


def trl_chat_template(name: str) -> str:
    """A chat template shipped with the installed TRL (read at build time, never copied into this repository)."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)

LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
GEMMA3_IMAGE_SPECIALS = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]


def tokenizer_for(family: str):
    """The processing tokenizer of a model family (``qwen2_5``, ``qwen3``, ``qwen2_5_vl``, ``qwen2_vl``,
    ``llama3_2``, ``gemma2``, ``gemma3``, ``mistral``, ``llava_next``)."""
    if family in ("qwen2_5", "qwen2_5_vl", "qwen2_vl"):
        template = {"qwen2_5": "qwen2_5", "qwen2_5_vl": "qwen2_5_vl", "qwen2_vl": "qwen2_5_vl"}[family]
        return build_qwen_tokenizer(trl_chat_template(template), QWEN25_SPECIALS)
    if family == "qwen3":
        return build_qwen_tokenizer(trl_chat_template("qwen3"), QWEN25_SPECIALS + QWEN3_EXTRA_SPECIALS)
    if family == "llama3_2":
        return build_small_tokenizer(
            LLAMA3_SPECIALS,
            bos="<|begin_of_text|>",
            eos="<|eot_id|>",
            pad=None,
            chat_template=trl_chat_template("llama3_2"),
        )
    if family in ("gemma2", "gemma3"):
        specials = GEMMA_SPECIALS + (GEMMA3_IMAGE_SPECIALS if family == "gemma3" else [])
        template = trl_chat_template("gemma3" if family == "gemma3" else "gemma")
        named = (
            {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
            if family == "gemma3"
            else None
        )
        return build_small_tokenizer(
            specials, bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", chat_template=template, named_specials=named
        )
    if family == "mistral":
        return build_small_tokenizer(
            ["<unk>", "<s>", "</s>"], bos="<s>", eos="</s>", pad=None, unk="<unk>", chat_template=MISTRAL_TEMPLATE
        )
    if family == "llava_next":
        return build_small_tokenizer(
            ["<unk>", "<s>", "</s>", "<image>", "<pad>"],
            bos="<s>",
            eos="</s>",
            pad="<pad>",
            unk="<unk>",
            chat_template=trl_chat_template("llava_next"),
        )
    raise ValueError(f"unknown tokenizer family {family!r}")


# ----------------------------------------------------------------------------------------------------------- models

TEXT_DIMS: dict[str, Any] = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
)


@dataclass
class ModelSpec:
    """One stand-in repository: ``build(tokenizer)`` returns ``(model, processor_or_None)``."""

    repo: str
    family: str
    build: Callable[[Any], tuple[Any, Any]]
    notes: str = ""
    extra_files: dict[str, str] = field(default_factory=dict)


def _special_ids(tokenizer) -> dict[str, int | None]:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    }


def _causal(config_cls_name: str, model_cls_name: str, **overrides) -> Callable[[Any], tuple[Any, Any]]:
    def build(tokenizer):
        import transformers

        config_cls = getattr(transformers, config_cls_name)
        kwargs = {**TEXT_DIMS, "vocab_size": len(tokenizer), **_special_ids(tokenizer), **overrides}
        config = config_cls(**kwargs)
        model = getattr(transformers, model_cls_name)(config)
        return model, None

    return build


def _seq_cls(config_cls_name: str, model_cls_name: str, **overrides) -> Callable[[Any], tuple[Any, Any]]:
    def build(tokenizer):
        import transformers

        config_cls = getattr(transformers, config_cls_name)
        kwargs = {**TEXT_DIMS, "vocab_size": len(tokenizer), **_special_ids(tokenizer), "num_labels": 1, **overrides}
        model = getattr(transformers, model_cls_name)(config_cls(**kwargs))
        return model, None

    return build


def _qwen_vl(version: str) -> Callable[[Any], tuple[Any, Any]]:
    """Qwen2-VL / Qwen2.5-VL: a 2-block vision tower with 14-pixel patches merged 2x2 into the text stream."""

    def build(tokenizer):
        import transformers
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
        from transformers.utils import is_torchvision_available

        if not is_torchvision_available():
            # Qwen2-VL processors hold a video processor, which transformers only provides with torchvision; neither
            # the processor nor `AutoProcessor.from_pretrained` can be built without it.
            raise RuntimeError("needs torchvision (Qwen2-VL processors include a video processor); not installed")

        if version == "2.5":
            config_cls, model_cls, processor_cls = (
                transformers.Qwen2_5_VLConfig,
                transformers.Qwen2_5_VLForConditionalGeneration,
                transformers.Qwen2_5_VLProcessor,
            )
            vision = dict(
                depth=2,
                hidden_size=16,
                intermediate_size=32,
                num_heads=2,
                out_hidden_size=TEXT_DIMS["hidden_size"],
                fullatt_block_indexes=[1],
                window_size=56,
            )
        else:
            config_cls, model_cls, processor_cls = (
                transformers.Qwen2VLConfig,
                transformers.Qwen2VLForConditionalGeneration,
                transformers.Qwen2VLProcessor,
            )
            vision = dict(depth=2, embed_dim=16, hidden_size=TEXT_DIMS["hidden_size"], num_heads=2, mlp_ratio=2)
        text = {**TEXT_DIMS, "vocab_size": len(tokenizer), "rope_scaling": None, **_special_ids(tokenizer)}
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": [1, 1, 0], "rope_theta": 10000.0}
        ids = {
            "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
            "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
            "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
            "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        }
        config = config_cls(text_config=text, vision_config=vision, **ids)
        model = model_cls(config)
        image_processor = Qwen2VLImageProcessorPil(
            min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16, patch_size=14, merge_size=2, temporal_patch_size=2
        )
        processor = _make_processor(processor_cls, image_processor, tokenizer, tokenizer.chat_template)
        return model, processor

    return build


def _make_processor(processor_cls, image_processor, tokenizer, chat_template, **kwargs):
    """``processor_cls`` without a video processor (torchvision is not installed) when the class allows it."""
    import inspect

    params = inspect.signature(processor_cls.__init__).parameters
    if "video_processor" in params:
        kwargs.setdefault("video_processor", None)
    return processor_cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)


def _gemma3(tokenizer):
    import transformers
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    text = {
        **TEXT_DIMS,
        "vocab_size": len(tokenizer),
        "head_dim": 4,
        "sliding_window": 64,
        **_special_ids(tokenizer),
    }
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
        vision_use_head=False,
    )
    config = transformers.Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
    )
    model = transformers.Gemma3ForConditionalGeneration(config)
    image_processor = Gemma3ImageProcessorPil(size={"height": 28, "width": 28})
    processor = _make_processor(
        transformers.Gemma3Processor, image_processor, tokenizer, tokenizer.chat_template, image_seq_length=4
    )
    return model, processor


def _llava_next(tokenizer):
    import transformers
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    text = {**TEXT_DIMS, "vocab_size": len(tokenizer), **_special_ids(tokenizer), "model_type": "llama"}
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
        projection_dim=16,
    )
    config = transformers.LlavaNextConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=[[28, 28], [28, 56], [56, 28]],
        vision_feature_layer=-1,
    )
    model = transformers.LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 28},
        crop_size={"height": 28, "width": 28},
        image_grid_pinpoints=[[28, 28], [28, 56], [56, 28]],
    )
    processor = _make_processor(
        transformers.LlavaNextProcessor,
        image_processor,
        tokenizer,
        tokenizer.chat_template,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" feature strategy
    )
    return model, processor


MODEL_SPECS: list[ModelSpec] = [
    ModelSpec(f"{ORG}/tiny-Qwen2ForCausalLM-2.5", "qwen2_5", _causal("Qwen2Config", "Qwen2ForCausalLM")),
    ModelSpec(
        f"{ORG}/tiny-Qwen2ForSequenceClassification-2.5",
        "qwen2_5",
        _seq_cls("Qwen2Config", "Qwen2ForSequenceClassification"),
    ),
    ModelSpec(
        f"{ORG}/tiny-Qwen3ForCausalLM",
        "qwen3",
        _causal("Qwen3Config", "Qwen3ForCausalLM", head_dim=4, tie_word_embeddings=False),
    ),
    ModelSpec(
        f"{ORG}/tiny-Qwen3ForSequenceClassification",
        "qwen3",
        _seq_cls("Qwen3Config", "Qwen3ForSequenceClassification", head_dim=4),
    ),
    ModelSpec(
        f"{ORG}/tiny-Qwen3MoeForCausalLM",
        "qwen3",
        _causal(
            "Qwen3MoeConfig",
            "Qwen3MoeForCausalLM",
            head_dim=4,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            tie_word_embeddings=False,
        ),
    ),
    ModelSpec(
        f"{ORG}/tiny-Gemma2ForCausalLM",
        "gemma2",
        _causal("Gemma2Config", "Gemma2ForCausalLM", head_dim=4, tie_word_embeddings=True),
    ),
    ModelSpec(f"{ORG}/tiny-LlamaForCausalLM-3.2", "llama3_2", _causal("LlamaConfig", "LlamaForCausalLM")),
    ModelSpec(
        f"{ORG}/tiny-LlamaForSequenceClassification-3.2",
        "llama3_2",
        _seq_cls("LlamaConfig", "LlamaForSequenceClassification"),
    ),
    ModelSpec(f"{ORG}/tiny-MistralForCausalLM-0.2", "mistral", _causal("MistralConfig", "MistralForCausalLM")),
    ModelSpec(f"{ORG}/tiny-Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl", _qwen_vl("2.5")),
    ModelSpec(f"{ORG}/tiny-Qwen2VLForConditionalGeneration", "qwen2_vl", _qwen_vl("2")),
    ModelSpec(f"{ORG}/tiny-Gemma3ForConditionalGeneration", "gemma3", _gemma3),
    ModelSpec(f"{ORG}/tiny-LlavaNextForConditionalGeneration", "llava_next", _llava_next),
]


def _cache_key() -> str:
    import tokenizers
    import torch
    import transformers
    import trl

    digest = hashlib.sha256(Path(__file__).read_bytes())
    for version in (transformers.__version__, tokenizers.__version__, torch.__version__, trl.__version__):
        digest.update(version.encode())
    return digest.hexdigest()[:16]


def default_hub_root() -> Path:
    """``$TRL_COMPAT_HUB_CACHE`` or ``<tmp>/trl_compat_hub``: where built hubs are kept between sessions."""
    return Path(os.environ.get("TRL_COMPAT_HUB_CACHE") or Path(tempfile.gettempdir()) / "trl_compat_hub")


def _write_snapshot(hub: Path, spec: ModelSpec, log: Callable[[str], None]) -> None:
    import torch

    org, name = spec.repo.split("/")
    repo_dir = hub / f"models--{org}--{name}"
    snapshot = repo_dir / "snapshots" / FAKE_COMMIT
    tmp = repo_dir / "snapshots" / f".{FAKE_COMMIT}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = tokenizer_for(spec.family)
    torch.manual_seed(int(hashlib.sha256(spec.repo.encode()).hexdigest(), 16) % 2**31)
    model, processor = spec.build(tokenizer)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = model.config.get_text_config().pad_token_id
    model.save_pretrained(tmp)
    (processor if processor is not None else tokenizer).save_pretrained(tmp)
    for filename, text in spec.extra_files.items():
        (tmp / filename).write_text(text, encoding="utf-8")
    shutil.rmtree(snapshot, ignore_errors=True)
    tmp.rename(snapshot)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(FAKE_COMMIT, encoding="utf-8")
    params = sum(p.numel() for p in model.parameters())
    log(f"  built {spec.repo} ({type(model).__name__}, {params / 1e6:.2f}M parameters)")


def ensure_hub(root: Path | None = None, *, log: Callable[[str], None] = print, only: list[str] | None = None) -> Path:
    """Build (once) the offline Hub cache and return the directory to use as ``HF_HOME``.

    Models that fail to build are reported and skipped (their tests then fail the same way on every arm); the list
    of built repositories is in ``<HF_HOME>/trl_compat_manifest.json``.
    """
    home = (root or default_hub_root()) / _cache_key()
    manifest_path = home / "trl_compat_manifest.json"
    if manifest_path.exists():
        return home
    hub = home / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    log(f"trl_compat: building offline models into {hub}")
    manifest: dict[str, Any] = {"built": [], "failed": {}}
    for spec in MODEL_SPECS:
        if only is not None and spec.repo not in only:
            continue
        try:
            _write_snapshot(hub, spec, log)
            manifest["built"].append(spec.repo)
        except Exception as error:  # noqa: BLE001 - a model that cannot be built is reported, not fatal
            manifest["failed"][spec.repo] = f"{type(error).__name__}: {error}"
            log(f"  FAILED {spec.repo}: {type(error).__name__}: {error}")
    if only is None:
        manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return home


def offline_environment(hf_home: Path) -> dict[str, str]:
    """Environment variables that make ``from_pretrained`` read the built cache and never touch the network."""
    return {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TRL_EXPERIMENTAL_SILENCE": "1",
    }
