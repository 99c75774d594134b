"""The documentation holds together: every relative link and picture of README.md and docs/*.md points to a file
of the repository, every page of docs/ is reachable from the README, and the README's first screen says what
kerasvid is and gives the two commands (install + quickstart, install + tests)."""
import os
import re

from tests.helpers import REPO, doc_paths, doc_text

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _links(path):
    return [target for target in LINK.findall(doc_text(path))
            if not target.startswith(("http://", "https://", "mailto:", "#"))]


def test_every_relative_link_and_picture_exists():
    dead = []
    for path in doc_paths():
        for target in _links(path):
            resolved = os.path.normpath(os.path.join(REPO, os.path.dirname(path), target.split("#")[0]))
            if not os.path.exists(resolved):
                dead.append(f"{path}: {target}")
    assert not dead, f"dead links: {dead}"


def test_every_page_is_linked_from_the_readme():
    linked = {os.path.normpath(t) for t in _links("README.md")}
    pages = {p for p in doc_paths() if p != "README.md"}
    assert pages - linked == set(), f"pages the README does not link: {sorted(pages - linked)}"


def test_the_readme_fits_a_screen_of_what_where_and_how():
    readme = doc_text("README.md")
    assert len(readme.splitlines()) <= 130
    install_and_run = "pip install -e . && python train/main.py --flagfile=zoo/quickstart.flags"
    assert install_and_run in readme
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read().replace("pip install -q ", "pip install ")
    test_command = re.search(r"```bash\n(python3 -m venv .*pip install -e \".\[test\]\".*)\n```", readme).group(1)
    # .ci/run runs the README's test command (after its own fresh venv): the pip and pytest parts match.
    for part in test_command.split(" && ")[2:]:
        assert part in ci, f"{part!r} of the README's test command is not in .ci/run"
