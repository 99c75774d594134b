"""One command-line system (`kerasvid.command_flags`): every `kerasvid` command parses absl flags in a FlagValues of
its own (`--flagfile` works, nothing global, two commands in one process), bad input is one `error:` line + exit 2."""
import contextlib
import io

import pytest
from absl import flags

from kerasvid import cli, command_flags


def _run(argv):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            status = cli.main(argv)
        except SystemExit as e:
            status = e.code
    return status, err.getvalue(), out.getvalue()


def _command():
    command = command_flags.Command("kerasvid demo", "A demo.", positional="videos", min_positional=1)
    flags.DEFINE_string("saved_model", None, "export", flag_values=command.flag_values)
    flags.DEFINE_integer("top_k", 5, "labels", flag_values=command.flag_values)
    flags.DEFINE_bool("json", False, "json", flag_values=command.flag_values)
    return command


def test_parse_flags_positionals_flagfile_and_a_fresh_flag_values_each_time(tmp_path):
    flagfile = tmp_path / "demo.flags"
    flagfile.write_text("# settings\n--top_k=3\n--json\n")
    args = _command().parse(["--saved_model", "exp", "a.mp4", f"--flagfile={flagfile}", "b.mp4"],
                            required=("saved_model",))
    assert (args.saved_model, args.top_k, args.json, args.videos) == ("exp", 3, True, ["a.mp4", "b.mp4"])
    args = _command().parse(["--saved_model=exp2", "c.mp4"])  # nothing carried over from the first parse
    assert (args.saved_model, args.top_k, args.json, args.videos) == ("exp2", 5, False, ["c.mp4"])
    assert "saved_model" not in flags.FLAGS


@pytest.mark.parametrize("argv, message", [
    (["a.mp4"], "kerasvid demo: error: the following flags are required: --saved_model"),
    (["--saved_model=x"], "kerasvid demo: error: 0 videos given, at least 1 needed"),
    (["--saved_model=x", "--top_k=two", "a.mp4"], "kerasvid demo: error: flag --top_k=two: invalid literal"),
    (["--saved_model=x", "--bogus=1", "a.mp4"], "kerasvid demo: error: Unknown command line flag 'bogus'"),
])
def test_bad_input_is_one_error_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        _command().parse(argv, required=("saved_model",))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("usage: kerasvid demo") and err[1].startswith(message), err


@pytest.mark.parametrize("command, flag", [("convert", "--labels"), ("conjugates", "--records"),
                                           ("extract", "--endpoint"), ("predict", "--saved_model")])
def test_every_command_help_lists_its_flags_and_a_bad_flag_exits_2(command, flag):
    status, err, out = _run([command, "--help"])
    assert status == 0 and out.startswith(f"usage: kerasvid {command}") and f"  {flag}: " in out, out
    status, err, out = _run([command, "--no_such_flag=1"])
    assert status == 2 and f"kerasvid {command}: error: Unknown command line flag 'no_such_flag'" in err


def test_flagfile_works_for_predict_conjugates_and_convert(tmp_path):
    flagfile = tmp_path / "predict.flags"
    flagfile.write_text(f"--saved_model={tmp_path}\n--top_k=0\n")
    status, err, _ = _run(["predict", f"--flagfile={flagfile}", "a.mp4"])
    assert status == 2 and "kerasvid predict: error: --top_k must be >= 1, got 0" in err
    flagfile.write_text(f"--records={tmp_path}/nothing-*.tfrecord\n--output_dir={tmp_path / 'out'}\n")
    status, err, _ = _run(["conjugates", f"--flagfile={flagfile}"])
    assert status == 2 and "matches no file" in err
    flagfile.write_text("--format=list\n--labels=/nonexistent/list.txt\n--input_dir=/nonexistent\n"
                        f"--output_dir={tmp_path / 'out'}\n")
    status, err, _ = _run(["convert", f"--flagfile={flagfile}", "--workers", "1"])
    assert status == 2 and err.startswith("kerasvid convert: error:") and "/nonexistent" in err


@pytest.mark.parametrize("command", ["convert", "conjugates", "extract", "predict"])
def test_every_readme_flag_of_a_command_is_defined(command):
    import re

    from tests.helpers import doc_text

    readme = doc_text()
    used = {name for line in re.findall(rf"kerasvid {command} (.*)", readme) for name in re.findall(r"--(\w+)", line)}
    _, _, out = _run([command, "--help"])
    defined = set(re.findall(r"^  --(?:\[no\])?(\w+):", out, re.M))
    assert used and used - {"help"} <= defined, sorted(used - defined)
