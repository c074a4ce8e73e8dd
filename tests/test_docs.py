"""The README and docs/: the quickstart runs, every relative link resolves, and
the README opens with the two commands."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARKDOWN = [README, *DOCS]

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# [text](target) outside code; images too. Targets with a scheme are external.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _without_code(text: str) -> str:
    """The text with fenced blocks and inline code removed (links inside code
    are examples, not links)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (but - and
    _), spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.*)$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_docs_exist_and_readme_links_each():
    readme = README.read_text(encoding="utf-8")
    assert DOCS, "docs/ holds no Markdown file"
    for doc in DOCS:
        assert f"(docs/{doc.name})" in readme, f"README does not link {doc.name}"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for target in LINK.findall(_without_code(path.read_text(encoding="utf-8"))):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target} (no file {resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    assert not broken, f"{path.name}: broken links: {broken}"


def test_readme_starts_with_the_two_commands():
    readme = README.read_text(encoding="utf-8")
    first_section = readme.split("\n## ", 1)[0]
    assert "make demo" in first_section
    assert "make test" in first_section
    assert first_section.index("make demo") < first_section.index("make test")


def test_readme_is_short():
    assert README.stat().st_size < 8 * 1024


def quickstart_code() -> str:
    """The first ```python block of the README."""
    for language, body in FENCE.findall(README.read_text(encoding="utf-8")):
        if language == "python":
            return body
    raise AssertionError("README has no ```python block")


@pytest.mark.slow
def test_readme_quickstart_runs_and_passes(tmp_path):
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart_code(), encoding="utf-8")
    env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    match = re.fullmatch(r"(\d+) of (\d+) cross-checks passed", lines[-1])
    assert match, f"last line is not a passing verdict: {lines[-1]!r}"
    assert match.group(1) == match.group(2) and int(match.group(1)) > 0
