"""Checks of a config that its JSON schema cannot make, run while planning so no job starts on a bad config.

Light on purpose: the Snakefile imports it at parse time. Beyond yaml, the formula check needs patsy (pandas is
loaded by Snakemake's own validate), and the beta model's check asks Rscript (about 0.1 s).
"""

import math
import os
import shutil
import subprocess
from pathlib import Path

import yaml

# Files from which Transformers can build a tokenizer; a model directory needs one of them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model")


class ConfigError(ValueError):
    """A config value that would fail (or silently mislead) a job later, named by its file or key."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's SafeLoader keeps the last of two equal keys; this one refuses the second."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"{self.name}: line {key_node.start_mark.line + 1}: key {key!r} is given twice "
                                  f"(first on line {seen[key] + 1}); YAML would silently keep the last")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def check_unique_keys(path: str | Path) -> None:
    with open(path, encoding="utf-8") as stream:
        loader = _UniqueKeyLoader(stream)
        loader.name = str(path)
        try:
            loader.get_single_data()
        finally:
            loader.dispose()


def _key(path: tuple) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def check_numbers(value, path: tuple = ()) -> None:
    """No NaN or infinity anywhere (JSON schema bounds let NaN through), and no -0.0 (a PLW of -0 would name
    its own cells, plw--0, beside plw-0)."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_numbers(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_numbers(item, (*path, index))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"config {_key(path)}: {value} is not a finite number")
        if value == 0 and math.copysign(1, value) < 0:
            raise ConfigError(f"config {_key(path)}: -0.0; write 0")


def is_local_path(source: str) -> bool:
    """A model source is a local directory when it looks like a path or exists; otherwise a Hub id."""
    return os.path.isabs(source) or source[:1] in (".", "~") or Path(source).exists()


def check_local_files(config: dict) -> None:
    """Local datasets, model directories (with a tokenizer) and task directories exist, checked even when results
    exist already: Snakemake would otherwise find nothing to do and keep results made from another file."""
    for name, spec in config["datasets"].items():
        if "path" in spec and not Path(spec["path"]).is_file():
            raise ConfigError(f"config datasets.{name}.path: no file {spec['path']!r}")
    for section in ("models", "judges"):
        for name, spec in config[section].items():
            check_model_directory(spec.get("source"), f"{section}.{name}.source")
    for name, spec in config["judged_benchmarks"].items():
        if "path" in spec["data"] and not Path(spec["data"]["path"]).is_file():
            raise ConfigError(f"config judged_benchmarks.{name}.data.path: no file {spec['data']['path']!r}")
    for index, directory in enumerate(config["evaluation"]["include_path"]):
        if not Path(directory).is_dir():
            raise ConfigError(f"config evaluation.include_path[{index}]: no directory {directory!r}")


def check_model_directory(source: str | None, key: str) -> None:
    """A local model source is a save_pretrained directory with its tokenizer (a Hub id is checked by prefetch)."""
    if source is None or not is_local_path(source):
        return
    directory = Path(source).expanduser()
    if not (directory / "config.json").is_file():
        raise ConfigError(f"config {key}: {source!r} is not a model directory (no config.json; "
                          "write one with save_pretrained)")
    if not any((directory / file).is_file() for file in TOKENIZER_FILES):
        raise ConfigError(f"config {key}: {source!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                          "save the tokenizer there with save_pretrained")


def check_judged_benchmarks(config: dict) -> None:
    """Judged benchmarks name a known judge, judges a known model, and no name is also an lm-eval benchmark's (both
    write results/eval/<cell>/<name>.parquet)."""
    for name, spec in config["judged_benchmarks"].items():
        if name in config["benchmarks"]:
            raise ConfigError(f"config judged_benchmarks.{name}: also a name in benchmarks; rename one")
        if spec["judge"] not in config["judges"]:
            raise ConfigError(f"config judged_benchmarks.{name}.judge: unknown judge {spec['judge']!r}; known: "
                              f"{', '.join(config['judges']) or 'none (add a judges section)'}")
    for name, spec in config["judges"].items():
        if "model" in spec and spec["model"] not in config["models"]:
            raise ConfigError(f"config judges.{name}.model: unknown model {spec['model']!r}; known: "
                              f"{', '.join(config['models'])}")


def check_derivations(config: dict) -> None:
    for name, spec in config["datasets"].items():
        if "derive" not in spec:
            continue
        parent = config["datasets"].get(spec["from"])
        if parent is None:
            raise ConfigError(f"config datasets.{name}.from: unknown dataset {spec['from']!r}; "
                              f"known: {', '.join(config['datasets'])}")
        if "derive" in parent:
            raise ConfigError(f"config datasets.{name}.from: {spec['from']!r} is itself derived; "
                              "derive from a dataset with a source")


def check_training(training: dict) -> None:
    if training["attn_implementation"] == "packed_sdpa" and not training["packing"]:
        raise ConfigError("config training.attn_implementation: packed_sdpa attends within packed sequences; "
                          "set training.packing: true, or choose sdpa")
    # the number of GPUs is known only in the job, which checks the full product again
    if training["global_batch_size"] % training["per_device_batch_size"]:
        raise ConfigError(f"config training.global_batch_size {training['global_batch_size']} is not a multiple of "
                          f"training.per_device_batch_size {training['per_device_batch_size']}")


def check_formula(formula: str) -> None:
    """The analysis formula reads known columns and holds the terms that λ is read from (plw.analysis)."""
    from plw.analysis import FormulaError
    from plw.analysis import check_formula as check  # numpy, pandas and patsy; statsmodels only when fitting

    try:
        check(formula)
    except FormulaError as error:
        raise ConfigError(f"config analysis.formula: {error}") from None


R_PACKAGES = ("glmmTMB", "jsonlite")  # what scripts/beta_regression.R loads


def beta_model_unavailable() -> str | None:
    """Why the beta model (scripts/beta_regression.R) cannot be fitted here, or None: Rscript on PATH and the R
    packages installed, asked without loading them. R's user files apply (as in the rule: a library in
    ~/.Renviron's R_LIBS_USER counts); a marker sets the answer apart from what an ~/.Rprofile prints."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return "no Rscript on PATH"
    names = ", ".join(repr(name) for name in R_PACKAGES)
    probe = f"cat('missing:', Filter(function(name) !nzchar(system.file(package = name)), c({names})))"
    try:
        asked = subprocess.run([rscript, "-e", probe], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{rscript} does not run ({error})"
    lacking = asked.stdout.rpartition("missing:")[2].split()
    if asked.returncode or "missing:" not in asked.stdout:
        return f"{rscript} failed ({asked.stderr.strip()[-300:]})"
    return f"{rscript} lacks the R package(s) {', '.join(lacking)}" if lacking else None


def check_config(config: dict, files: list[str]) -> None:
    """Every check above, on the validated config (defaults filled in) and the files it was read from."""
    for path in files:
        check_unique_keys(path)
    check_numbers(config)
    check_derivations(config)
    check_judged_benchmarks(config)
    check_training(config["training"])
    check_local_files(config)
    check_formula(config["analysis"]["formula"])
