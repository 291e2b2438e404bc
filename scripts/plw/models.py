"""Load base models and tokenizers from a Hub id or a local directory, with the config's safety options; compile
the decoder layers of a model."""


def load_tokenizer(source: str, *, revision: str | None = None, trust_remote_code: bool = False, **kwargs):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code, **kwargs)


def token_counter(tokenizer):
    """texts -> token counts, without special tokens."""
    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return count


def base_model(model):
    """The Transformers model itself, also inside a peft (LoRA) wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def compile_decoder_layers(model) -> None:
    """torch.compile each decoder layer in place (regional compilation): the layers share one compiled graph, which
    fuses a layer's elementwise work (norms, rotary embedding, SwiGLU) into few kernels, and the state dict keeps
    its keys. The first two micro-batch lengths compile it (static, then dynamic); later ones reuse it."""
    for layer in base_model(model).get_decoder().layers:
        layer.compile()
