"""The offline tiny model: what is saved reloads as it was trained."""

from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_aem.tiny import build_model, build_tokenizer


def test_a_saved_tiny_model_reloads_with_the_tokenizer_it_was_trained_with(tmp_path):
    """A folder holding the Qwen2-style model and its tokenizer reloads the tokenizer as transformers' Qwen2Tokenizer
    (the model's type decides), whose pre-tokenizer splits digits one by one; the tiny tokenizer must split the same
    way, or every saved checkpoint (quickstart, trl-aem train, the learning benchmark's warm starts) would read its
    prompts differently from how it was trained."""
    corpus = ["Room 12 of 7. Doors: 1 yellow, 2 black, 3 gray. Sign: take the gray door.", "Say the word key 42."]
    tokenizer = build_tokenizer(corpus * 10)
    build_model(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    messages = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": corpus[0]}]
    for text in [*corpus, "café 2026 naïve\n\n  x"]:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert reloaded.apply_chat_template(messages, add_generation_prompt=True) == tokenizer.apply_chat_template(
        messages, add_generation_prompt=True
    )
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.vocab_size == len(tokenizer)
