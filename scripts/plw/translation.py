"""The paper's rephrased WMT prompt: an instruction to translate, inside the Alpaca prompt template."""

from plw.prompts import render_prompt

LANGUAGES = {"en": "English", "fr": "French", "de": "German", "ro": "Romanian"}


def translation_instruction(source: str, target: str) -> str:
    """'Translate the following from English to French' (the paper's wording, no final period)."""
    return f"Translate the following from {LANGUAGES[source]} to {LANGUAGES[target]}"


def translation_prompt(doc: dict, source: str, target: str) -> str:
    """The prompt of one document in the WMT schema {"translation": {source: ..., target: ...}}:
    the instruction as the Alpaca instruction and the source sentence as the Alpaca input."""
    return render_prompt(translation_instruction(source, target), doc["translation"][source])
