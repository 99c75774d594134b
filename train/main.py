"""`python train/main.py [flags]` = `kerasvid train [flags]`: the command lives in `kerasvid.train_cli` (this file
is its entry point for the recipes, `python train/main.py --flagfile=zoo/<recipe>.flags`; the package must be
installed, `pip install -e .`)."""
from absl import app, flags

from kerasvid import train_cli

__doc__ = train_cli.__doc__  # noqa: A001 (what --help prints)
flags.adopt_module_key_flags(train_cli)  # --help lists the command's flags

if __name__ == "__main__":
    app.run(train_cli.main)
