"""The `kerasvid` console script: `kerasvid <command> [flags]`.

Commands are looked up in `COMMANDS` and imported only when run, so `kerasvid --help` stays fast. Every command
parses absl flags (`--flagfile=FILE` works for each): `train` on the global `flags.FLAGS` (it is also
`python train/main.py`), the others in a `flags.FlagValues` of their own (`kerasvid.command_flags.Command`).
TensorFlow's loading notices (oneDNN, CUDA probing on a machine without a GPU) are dropped for every command
(`kerasvid._quiet`); other lines and every `error: ...` line pass through.
"""
import importlib
import sys

from kerasvid import _quiet

COMMANDS = {
    "convert": ("kerasvid.data.convert:main", "videos / frame folders + labels -> sharded SequenceExample records"),
    "conjugates": ("kerasvid.data.conjugates:main", "conjugate samples: remove the actors' boxes, inpaint, blend"),
    "extract": ("kerasvid.extract:main", "one feature array per video from a model endpoint (res5, Mixed_5c, ...)"),
    "predict": ("kerasvid.predict:main", "top-k labels of video files through an exported SavedModel"),
    "train": ("kerasvid.train_cli:command", "train / evaluate / export a zoo model (= python train/main.py; "
              "--flagfile=zoo/<recipe>.flags)"),
}


def _usage():
    lines = ["usage: kerasvid <command> [flags]   (kerasvid <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in sorted(COMMANDS.items())]
    return "\n".join(lines)


def main(argv=None):
    """Dispatches `argv[0]` to its command's `main(argv[1:])` and returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command = argv[0]
    if command not in COMMANDS:
        print(f"kerasvid: unknown command {command!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    _quiet.quiet_tensorflow()  # before the command imports TensorFlow (lazily: --help stays without it)
    module_name, func_name = COMMANDS[command][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    status = func(argv[1:])
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
