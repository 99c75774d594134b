"""The documentation holds together: every relative link and picture of README.md and docs/*.md points to a file
of the repository, every page of docs/ is reachable from the README, and the README is short and gives the two
commands (install + quickstart, install + tests; that CI runs the latter is tests/test_ci.py)."""
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
    assert 'pip install -e ".[test]" && python -m pytest -q tests --run_large' in readme  # .ci/run: tests/test_ci.py
