"""doc_to_text functions of the plw_wmt* tasks: thin adapters over plw.translation (one per direction)."""

import sys
from pathlib import Path

# lm-eval loads this file by path; make the project's package importable when lm-eval runs on its own too.
_SCRIPTS = str(Path(__file__).resolve().parents[2] / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.append(_SCRIPTS)

from plw.translation import translation_prompt  # noqa: E402


def _direction(source: str, target: str):
    def doc_to_text(doc: dict) -> str:
        return translation_prompt(doc, source, target)

    doc_to_text.__name__ = f"{source}_{target}"
    return doc_to_text


en_fr = _direction("en", "fr")
fr_en = _direction("fr", "en")
en_de = _direction("en", "de")
de_en = _direction("de", "en")
en_ro = _direction("en", "ro")
ro_en = _direction("ro", "en")
