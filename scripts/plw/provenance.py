"""Which code made a result: the project's git commit, and whether its code differed from that commit."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# what a result depends on besides the config (results/ and the docs do not count)
CODE_PATHS = ("Snakefile", "workflow", "scripts", "resources", "envs", "requirements.txt")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # no git on this node
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict:
    """{"code_commit": the HEAD commit or None (not a git checkout), "code_modified": whether tracked code
    files differ from it, or None}."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"code_commit": None, "code_modified": None}
    changes = _git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    return {"code_commit": commit, "code_modified": None if changes is None else bool(changes)}
