"""Load base models and tokenizers from a Hub id or a local directory, with the config's safety options."""


def load_tokenizer(source: str, *, revision: str | None = None, trust_remote_code: bool = False, **kwargs):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code, **kwargs)


def token_counter(tokenizer):
    """texts -> token counts, without special tokens."""
    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return count
