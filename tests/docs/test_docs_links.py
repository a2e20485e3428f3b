"""Every link in the project's Markdown lands inside the repository, so a clone can follow it.

A link that is not an absolute http(s) or mailto URL must name a file or folder of the
repository (relative to the file that holds it; never climbing out of the repository's root),
and a `#section` in it must be a heading (by GitHub's slug rules) or an `<a id>` of the
Markdown file it points at. Inline links, images and reference definitions count; code
spans and fenced code blocks do not (their text is not a link).

Which files exist is what git would hand a clone (tracked, or new and not ignored), so a link
to something only this machine has (`.devstack/`, a result file git ignores) fails here too.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.paths import ROOT

# The Markdown a reader of the repository meets: the front door, the docs and the READMEs.
PATTERNS = (
    "README.md",
    "BENCHMARKS.md",
    "docs/**/*.md",
    "deploy/**/*.md",
    "examples/**/*.md",
    "tests/**/*.md",
)
SKIPPED_DIRS = {"node_modules", ".venv", ".git", ".devstack"}

ABSOLUTE = re.compile(r"^(https?|mailto):", re.IGNORECASE)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
# `[text](target "title")` and `![alt](<target>)`; the text may hold brackets one level deep.
INLINE = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^<>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^<>\n]*>|\S+)", re.MULTILINE)
ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:[^>]*\s)?(?:id|name)=[\"']([^\"']+)[\"']", re.IGNORECASE)


def markdown_files(root: Path = ROOT) -> list[Path]:
    found = {
        path
        for pattern in PATTERNS
        for path in root.glob(pattern)
        if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(root).parts)
    }
    return sorted(found)


def repository_paths(root: Path) -> set[str] | None:
    """Every file and folder a clone has (relative, `/`-separated); None without git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return None
    paths: set[str] = {""}
    for name in filter(None, listed.split("\0")):
        if not (root / name).exists():  # deleted in the work tree, not committed yet
            continue
        parts = name.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return paths


def prose_lines(text: str, *, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with code spans blanked out (unless
    `blank_code` is false: a heading's code is part of its text)."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            continue
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            continue
        lines.append((number, line))
    if not blank_code:
        return lines
    # Code spans may run over a line break: blank them in the joined text, keeping the lines.
    joined = "\n".join(line for _, line in lines)
    joined = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), joined)
    return [(number, line) for (number, _), line in zip(lines, joined.split("\n"), strict=True)]


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition."""
    found: list[tuple[int, str]] = []
    for number, line in prose_lines(text):
        targets = [m.group(1) for m in INLINE.finditer(line)]
        targets += [m.group(1) for m in REFERENCE.finditer(line)]
        found += [(number, target.removeprefix("<").removesuffix(">")) for target in targets]
    return found


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text as shown, lower case, punctuation dropped
    (hyphens and underscores kept), spaces as hyphens."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", heading)  # images show no text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every `#fragment` a Markdown file answers to: its headings' slugs (a repeated one gets
    `-1`, `-2`... as on GitHub) and its `<a id>`/`<a name>` anchors."""
    found: set[str] = set(HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    previous = ""
    for _, line in prose_lines(text, blank_code=False):
        heading = None
        atx = ATX.match(line)
        if atx:
            heading = atx.group(2)
        elif SETEXT.match(line) and previous.strip() and not previous.lstrip().startswith("|"):
            heading = previous
        previous = line
        if heading is None:
            continue
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path, root: Path = ROOT, known: set[str] | None = None) -> list[str]:
    """What is wrong with each link of `path` that does not land inside `root`."""
    root = root.resolve()
    problems: list[str] = []
    where = path.relative_to(root)
    text = path.read_text(encoding="utf-8")
    for number, raw in links(text):
        target = raw.strip()
        if not target or ABSOLUTE.match(target):
            continue
        problem = _check(path, root, known, text, target)
        if problem:
            problems.append(f"{where}:{number}: ({raw}) {problem}")
    return problems


def _check(path: Path, root: Path, known: set[str] | None, text: str, target: str) -> str | None:
    if SCHEME.match(target):
        return "a URL that is neither http(s) nor mailto; link to a file of the repository"
    file_part, _, fragment = target.partition("#")
    file_part = unquote(file_part.split("?", 1)[0])
    if file_part.startswith("/"):
        return "an absolute path; write it relative to this file"
    if not file_part:
        destination, destination_text = path, text
    else:
        destination = (path.parent / file_part).resolve()
        if not destination.is_relative_to(root):
            return "climbs out of the repository"
        relative = destination.relative_to(root).as_posix()
        relative = "" if relative == "." else relative
        exists = relative in known if known is not None else destination.exists()
        if not exists:
            return f"no such file or folder in the repository: {relative}"
        destination_text = None
        if destination.is_file() and destination.suffix.lower() in (".md", ".markdown"):
            destination_text = destination.read_text(encoding="utf-8")
    if fragment and destination_text is not None:
        wanted = unquote(fragment).lower()
        if wanted not in {anchor.lower() for anchor in anchors(destination_text)}:
            name = destination.relative_to(root).as_posix()
            return f"no heading or anchor #{fragment} in {name}"
    return None


@pytest.mark.parametrize("markdown", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_lands_inside_the_repository(markdown: Path) -> None:
    problems = broken_links(markdown, ROOT, repository_paths(ROOT))
    assert not problems, "links a clone cannot follow:\n" + "\n".join(problems)


def test_the_files_checked_include_the_readme_and_the_docs() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in markdown_files()}
    assert {"README.md", "docs/runbook.md", "docs/design.md"} <= names


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def _problems(root: Path, name: str, known: Iterable[str] | None = None) -> list[str]:
    return broken_links(root / name, root, set(known) if known is not None else None)


def test_the_checker_catches_each_kind_of_broken_link(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _write(
        repo,
        {
            "docs/guide.md": "# Guide\n\n## Rolling out a change to `MintSaga`\n\nText.\n\n"
            '## Step\n\n## Step\n\n<a id="old-name"></a>\n',
            "deploy/run.sh": "echo\n",
            "README.md": "\n".join(
                [
                    "# Read me",
                    "[fine](docs/guide.md) [folder](deploy/) [script](./deploy/run.sh)",
                    "[section](docs/guide.md#rolling-out-a-change-to-mintsaga)",
                    "[repeated](docs/guide.md#step-1) [alias](docs/guide.md#old-name)",
                    "[here](#read-me) [web](https://example.com/x) <https://example.com>",
                    "![image](docs/missing.png)",
                    "[gone](docs/gone.md)",
                    "[outside](../shared/DESIGN.md)",
                    "[no section](docs/guide.md#nowhere)",
                    "[not here](#nowhere)",
                    "[absolute](/etc/passwd)",
                    "[file url](file:///etc/passwd)",
                    "[ref]: docs/also-gone.md",
                    "`[in code](docs/ignored.md)`",
                    "```",
                    "[in a block](docs/ignored.md)",
                    "```",
                ]
            ),
        },
    )
    problems = _problems(repo, "README.md")
    joined = "\n".join(problems)
    assert len(problems) == 8, joined
    for needle in (
        "(docs/missing.png) no such file",
        "(docs/gone.md) no such file",
        "(../shared/DESIGN.md) climbs out of the repository",
        "(docs/guide.md#nowhere) no heading or anchor #nowhere in docs/guide.md",
        "(#nowhere) no heading or anchor #nowhere in README.md",
        "(/etc/passwd) an absolute path",
        "(file:///etc/passwd) a URL that is neither",
        "(docs/also-gone.md) no such file",
    ):
        assert needle in joined, f"{needle!r} not reported:\n{joined}"
    assert "ignored" not in joined


def test_a_file_git_would_not_hand_a_clone_does_not_count(tmp_path: Path) -> None:
    _write(tmp_path, {"README.md": "[state](.devstack/stack.json)\n", ".devstack/stack.json": "{}"})
    assert _problems(tmp_path, "README.md") == []  # it exists on this machine...
    assert _problems(tmp_path, "README.md", known={"", "README.md"}) == [
        "README.md:1: (.devstack/stack.json) no such file or folder in the repository: "
        ".devstack/stack.json"
    ]  # ...but a clone would not have it


def test_headings_get_githubs_anchors() -> None:
    text = "# MintSaga\n\nIntro\n=====\n\n## Health and alerts\n\n### `mintsaga` CLI: 2.0!\n"
    assert anchors(text) == {"mintsaga", "intro", "health-and-alerts", "mintsaga-cli-20"}
    assert slug("Which limit is enforced where") == "which-limit-is-enforced-where"
    assert slug("From a [Python](x.md) backend") == "from-a-python-backend"
