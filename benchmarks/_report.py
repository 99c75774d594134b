"""Shared by the benchmark scripts: print a result as JSON and a markdown table, and save both under results/."""
import json
import os

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def save_report(name, data, table, out_dir=None):
    """Prints `data` (JSON) and `table` (markdown) and writes `<out_dir>/<name>.json` and `<name>.md`.

    Returns:
        The output directory.
    """
    out_dir = out_dir or RESULTS_DIR
    print(json.dumps(data, indent=1))
    print(table)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(table + "\n")
    return out_dir
