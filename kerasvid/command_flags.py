"""One command-line system for every `kerasvid` command: absl flags, each command in its own `flags.FlagValues`.

`kerasvid train` (train/main.py) is an absl app on the global `flags.FLAGS`; the other commands (`convert`,
`conjugates`, `extract`, `predict`) define their flags on a fresh `FlagValues` per call through `Command`, so that
nothing is global, two commands can run in one process, and `--flagfile=FILE` works for every command. Flags take
`--name=value` or `--name value`; booleans `--name` / `--noname`.

```python
command = Command("kerasvid predict", "Top-k labels of video files.", positional="video", min_positional=1)
flags.DEFINE_string("saved_model", None, "export directory", flag_values=command.flag_values)
args = command.parse(argv, required=("saved_model",))  # args.saved_model, args.video (a list)
```

Bad input: one `usage:` line and `<prog>: error: <message>` on stderr, exit status 2 (`SystemExit(2)`); `--help`
prints the flags and exits 0. This module imports no TensorFlow.
"""
import ast
import math
import sys
import textwrap
import types

from absl import flags

_HELP = ("-h", "-help", "--help", "--helpshort", "--helpfull", "-?")


class Command:
    """The flags of one command, in a `flags.FlagValues` of its own.

    Args:
        prog: the command as typed, e.g. "kerasvid predict" (the prefix of its error lines).
        description: the first paragraph of `--help`.
        positional: name of the positional arguments (e.g. "video"; "" = the command takes none); `parse` returns
            them as a list under this name.
        min_positional: fewest positional arguments.
        epilog: text printed after the flags in `--help`.
    """

    def __init__(self, prog, description, positional="", min_positional=0, epilog=""):
        self.prog, self.description, self.epilog = prog, description, epilog
        self.positional, self.min_positional = positional, min_positional
        self.flag_values = flags.FlagValues()

    def usage(self):
        more = f" {self.positional} ..." if self.positional else ""
        return f"usage: {self.prog} [--flagfile=FILE] [--flag=value ...]{more}"

    def help(self):
        """The `--help` text: usage, description, every flag with its help and default, epilog."""
        flag_help = self.flag_values.get_help(include_special_flags=False)
        text = f"{self.usage()}\n\n{textwrap.fill(self.description, 100)}\n\nflags:\n{flag_help}"
        return text + (f"\n\n{self.epilog}" if self.epilog else "")

    def error(self, message):
        """Prints the usage line and `<prog>: error: message` on stderr; exits with status 2."""
        sys.stderr.write(f"{self.usage()}\n{self.prog}: error: {message}\n")
        raise SystemExit(2)

    def parse(self, argv, required=()):
        """Parses `argv` (the arguments after the command name).

        Args:
            argv: list of strings.
            required: flags that must be given.

        Returns:
            A namespace of every flag's value (by name), plus the positional arguments as a list under
            `positional`.
        """
        argv = list(argv)
        if any(arg in _HELP for arg in argv):
            print(self.help())
            raise SystemExit(0)
        try:
            rest = self.flag_values([self.prog, *argv])[1:]
        except flags.Error as e:
            self.error(str(e))
        bad = nonfinite_float_flags(self.flag_values)
        if bad:
            self.error(bad[0])
        missing = [f"--{name}" for name in required if self.flag_values[name].value is None]
        if missing:
            self.error(f"the following flags are required: {', '.join(missing)}")
        if rest and not self.positional:
            self.error(f"unrecognized arguments: {' '.join(rest)}")
        if len(rest) < self.min_positional:
            self.error(f"{len(rest)} {self.positional} given, at least {self.min_positional} needed")
        values = self.flag_values.flag_values_dict()
        if self.positional:
            values[self.positional] = rest
        return types.SimpleNamespace(**values)


def nonfinite_float_flags(flag_values):
    """One message per float flag (or float list flag) set to NaN or infinity (absl parses `--fps=nan` as a float
    and every `>`/`<` check then passes): `["--fps must be a finite number, got nan", ...]`."""
    out = []
    for name in sorted(flag_values):
        flag = flag_values[name]
        if name != flag.name or flag.value is None:  # a short alias of a flag listed under its name
            continue
        values = flag.value if isinstance(flag.value, (list, tuple)) else [flag.value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                out.append(f"--{name} must be a finite number, got {v}")
                break
    return out


def parse_kwargs(text, flag):
    """`"a=1,b='x',c=(1, 2)"` -> dict; values are Python literals (bare words are strings).

    Raises:
        ValueError: naming `--flag` and the text, when `text` is not a list of `key=value` pairs.
    """
    if not text.strip():
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        if call.args:
            raise ValueError("positional value")
        out = {}
        for kw in call.keywords:
            try:
                out[kw.arg] = ast.literal_eval(kw.value)
            except ValueError:
                if isinstance(kw.value, ast.Name):
                    out[kw.arg] = kw.value.id
                else:
                    raise
        return out
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"--{flag}={text!r} is not a list of key=value pairs with Python literal values ({e}).")
