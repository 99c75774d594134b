"""CI runs the README's test command: `.ci/run` installs what the README installs and runs its pytest command, which
runs every test (`--run_large`)."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _commands(text):
    """(installs of the project, pytest command lines) of a shell text; pip's `-q` left out."""
    installs = [re.sub(r"\s+-q\b", "", m) for m in re.findall(r"pip install[^\n&]*?\S(?=\s*(?:&&|\n|$))", text)
                if "-e " in m]
    return installs, re.findall(r"python -m pytest[^\n&`]*?(?=\s*(?:&&|\n|$))", text)


def test_ci_runs_the_readme_test_command_with_the_large_tests():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    block = readme.split("Install the test dependencies and run the test suite")[1].split("```bash\n")[1].split("```")[0]
    ci = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
    ci = "\n".join(line for line in ci.splitlines() if not line.lstrip().startswith("#"))
    assert _commands(ci) == _commands(block) == (['pip install -e ".[test]"'], ["python -m pytest -q tests --run_large"])
