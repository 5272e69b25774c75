"""Issue 13, data loss: keys are plain names, --overwrite replaces only our runs, concurrent runs
have one winner, killed runs leave nothing behind, the CLI answers every error with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from spatialclust import _keys as K
from spatialclust._atomic import rename_new
from spatialclust._rundir import MANIFEST_FILE, RUN_MARKER, check_output_dir, read_manifest, run_directory, run_name
from spatialclust.cli import app

runner = CliRunner()
SRC = str(Path(__file__).resolve().parents[1] / "src")
SMALL = {
    "input": {"simulate": {"shape": [16, 16], "n_patterns": 2, "ions_per_pattern": 4, "n_matrix_ions": 1}},
    "embedding": ["regular"],
    "cluster": [{"method": "kmeans", "params": {"n_clusters": 2, "n_init": 1}}],
    "evaluate": {"n_boot": 10},
    "report": {"dpi": 30, "figures": ["cluster_means"], "embedding_figures": [], "thumbnails": False},
}


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _run(path: Path, **kwargs) -> Path:
    """A real run directory with one result file."""
    with run_directory(path, {"seed": 0}, command="test", **kwargs) as tmp:
        (tmp / "result.txt").write_text("new")
    return path


# ---------------------------------------------------------------------------------------- 1. keys
@pytest.mark.parametrize("name", ["X_regular", "cluster_regular_kmeans", "features+nca", "X_dino.v2", "Über_1"])
def test_plain_names_accepted(name):
    assert K.check_name(name, what="`key`") == name


@pytest.mark.parametrize("name", ["../escape", "/abs/key", "a/b", "a\\b", ".hidden", "..", "", "-flag", "a\x00b",
                                  "x" * 200, None, 3])
def test_path_like_keys_refused(name):
    with pytest.raises(ValueError, match="`key` must be a plain name"):
        K.check_name(name, what="`key`")


@pytest.mark.parametrize("override", [
    {"embedding": [{"method": "regular", "key": "../../outside"}]},
    {"embedding": [{"method": "regular", "key": "/tmp/abs"}]},
    {"cluster": [{"method": "kmeans", "params": {"n_clusters": 2}, "key": "{embedding}/../../x"}]},
])
def test_pipeline_refuses_path_keys_before_any_work(tmp_path, override):
    from spatialclust.pipeline import run_pipeline

    with pytest.raises(ValueError, match="must be a plain name"):
        run_pipeline({**SMALL, **override}, tmp_path / "run")
    assert _entries(tmp_path) == []


def test_cells_config_refuses_path_keys():
    from spatialclust.pipeline import load_config

    with pytest.raises(ValueError, match=r"`embedding\[0\].key` must be a plain name"):
        load_config({"embedding": [{"method": "dino", "key": "../x"}]}, pipeline="cells")


def _save(path: Path) -> Path:
    import torch

    from spatialclust.models import save_checkpoint

    return save_checkpoint(path, {"w": torch.zeros(2)}, {"architecture": {"n": 2}}, kind="test")


def test_checkpoint_never_replaces_a_foreign_folder(tmp_path):
    from spatialclust.models import is_checkpoint

    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "sample.imzML").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a spatialclust checkpoint.*'sample.imzML'"):
        _save(foreign)
    assert _entries(foreign) == ["sample.imzML"] and (foreign / "sample.imzML").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file or a link"):
        _save(tmp_path / "file")
    # a checkpoint is replaced; one holding an extra file is not
    ckpt = _save(tmp_path / "ckpt")
    _save(ckpt)
    assert is_checkpoint(ckpt)
    (ckpt / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="'notes.txt'"):
        _save(ckpt)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert is_checkpoint(_save(empty))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_train_refuses_a_foreign_checkpoint_folder_before_training(tmp_path):
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "sample.imzML").write_text("keep me")
    result = runner.invoke(app, ["train", "-o", str(foreign), "-q"])
    assert result.exit_code == 1 and result.output.count("Error:") == 1
    assert "not a spatialclust checkpoint" in result.output and "SimCLR on" not in result.output
    assert _entries(foreign) == ["sample.imzML"]


# ---------------------------------------------------------------------------------- 2. --overwrite
def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "sample.imzML").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"data' already holds other files \('sample.imzML'\).*not a spatialclust"):
        _run(data, overwrite=True)
    assert _entries(data) == ["sample.imzML"] and _entries(tmp_path) == ["data"]
    result = runner.invoke(app, ["demo", "-o", str(data), "--overwrite", "-q"])
    assert result.exit_code == 1 and "not a spatialclust run directory" in result.output
    assert _entries(data) == ["sample.imzML"]


def test_overwrite_replaces_only_what_the_run_wrote(tmp_path):
    run = _run(tmp_path / "run")
    manifest = read_manifest(run)
    assert manifest["marker"] == RUN_MARKER and manifest["status"] == "complete"
    assert manifest["files"] == ["config.yaml", "result.txt", "run.json", "run.log"] == _entries(run)
    (run / "result.txt").write_text("old")
    _run(run, overwrite=True)
    assert (run / "result.txt").read_text() == "new" and _entries(tmp_path) == ["run"]
    (run / "my_notes.txt").write_text("added by the user")
    with pytest.raises(FileExistsError, match="also holds 'my_notes.txt', which the run did not write"):
        _run(run, overwrite=True)
    assert (run / "my_notes.txt").is_file()


def test_overwrite_refuses_to_delete_an_input(tmp_path):
    run = _run(tmp_path / "run")
    (run / "result.txt").write_text("the input of the next run")
    with pytest.raises(ValueError, match="would delete the input .*result.txt"):
        _run(run, overwrite=True, inputs=[run / "result.txt", None])
    assert (run / "result.txt").read_text() == "the input of the next run"


# ------------------------------------------------------------------------------- 3. concurrency
def test_final_rename_has_exactly_one_winner(tmp_path):
    target = tmp_path / "run"
    sources = []
    for i in range(2):
        src = tmp_path / f".run.{i}.tmp"
        src.mkdir()
        (src / "who").write_text(str(i))
        sources.append(src)
    barrier, outcome = threading.Barrier(2), {}

    def commit(i):
        barrier.wait()
        try:
            rename_new(sources[i], target)
            outcome[i] = "won"
        except FileExistsError as err:
            outcome[i] = str(err)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, v in outcome.items() if v == "won"]
    assert len(winners) == 1
    assert "was created by another process" in outcome[1 - winners[0]]
    assert (target / "who").read_text() == str(winners[0])


def test_target_created_meanwhile_is_never_replaced(tmp_path):
    target = tmp_path / "run"
    with pytest.raises(FileExistsError, match="created by another process"):
        with run_directory(target, {}, command="test") as tmp:
            (tmp / "result.txt").write_text("mine")
            target.mkdir()
            (target / "theirs.txt").write_text("theirs")
    assert _entries(target) == ["theirs.txt"] and _entries(tmp_path) == ["run"]


_CHILD = """
import os, signal, sys, time
from pathlib import Path
from spatialclust._rundir import run_directory
target, mode = Path(sys.argv[1]), sys.argv[2]
with run_directory(target, {{}}, command="child") as tmp:
    (tmp / "result.txt").write_text("child")
    (target.parent / "ready").write_text("")
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    while not (target.parent / "go").exists():
        time.sleep(0.02)
"""


def _child(target: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(), str(target), mode], env=env)
    deadline = time.time() + 60
    while not (target.parent / "ready").exists():
        assert proc.poll() is None and time.time() < deadline, "the child run did not start"
        time.sleep(0.02)
    (target.parent / "ready").unlink()
    return proc


def test_concurrent_run_fails_clearly_while_another_writes(tmp_path):
    target = tmp_path / "run"
    proc = _child(target, "wait")
    try:
        with pytest.raises(FileExistsError, match=rf"Another spatialclust run \(pid {proc.pid} .*is writing"):
            _run(target)
        with pytest.raises(FileExistsError, match="Another spatialclust run"):
            _run(target, overwrite=True)
    finally:
        (tmp_path / "go").write_text("")
        assert proc.wait(timeout=60) == 0
    assert (target / "result.txt").read_text() == "child"
    assert _entries(tmp_path) == ["go", "run"]  # no lock file, no temporary folder


def test_killed_run_leftovers_are_removed_by_the_next_run(tmp_path):
    target = tmp_path / "run"
    proc = _child(target, "kill")
    assert proc.wait(timeout=60) == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert ".run.lock" in left and any(n.startswith(".run.") and n.endswith(".tmp") for n in left)
    foreign = tmp_path / ".run.user-data.tmp"  # the same pattern, but not ours: kept
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    (tmp_path / ".run.empty.tmp").mkdir()
    _run(target)
    assert _entries(tmp_path) == [".run.user-data.tmp", "run"]
    assert (target / "result.txt").read_text() == "new"


_CLI_CHILD = """
import sys, time
from pathlib import Path
import spatialclust.pipeline
from spatialclust._rundir import run_directory
from spatialclust.cli import main

def slow_run(config, output, **kwargs):  # a run that is busy when the SIGINT comes
    with run_directory(output, config, command="run") as tmp:
        (tmp / "result.txt").write_text("partial")
        (Path(output).parent / "ready").write_text("")
        time.sleep(60)

spatialclust.pipeline.run_pipeline = slow_run
sys.argv = ["spatialclust", "demo", "-o", sys.argv[1], "-q"]
main()
"""


def test_ctrl_c_stops_a_cli_run_with_one_line_and_leaves_nothing(tmp_path):
    """Was exit status 130 without a word (typer's silent abort)."""
    target = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _CLI_CHILD, str(target)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None and time.time() < deadline, "the child run did not start"
        time.sleep(0.02)
    (tmp_path / "ready").unlink()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.startswith("Interrupted (Ctrl-C). Run the command again") and err.count("\n") == 1
    assert _entries(tmp_path) == []  # neither the run directory nor its temporary folder or lock
    assert (_run(target) / "result.txt").read_text() == "new"


def test_report_header_names_the_final_directory(tmp_path):
    from spatialclust.pipeline import run_pipeline

    with run_directory(tmp_path / "final_name", {}, command="test") as tmp:
        assert tmp.name.startswith(".final_name.") and run_name(tmp) == "final_name"
    assert run_name(tmp_path / "final_name") == "final_name"
    run = run_pipeline(SMALL, tmp_path / "my_run")
    html = (run / "report.html").read_text()
    assert "run directory my_run" in html and ".tmp" not in html
    assert json.loads((run / MANIFEST_FILE).read_text())["output"] == str(run.resolve())


# ---------------------------------------------------------------------------------- 5. CLI errors
@pytest.mark.parametrize("error, code, line", [
    (OverflowError("Python int too large to convert to C long"), 1, "Error: Python int too large to convert to C long"),
    (IndexError("list index out of range"), 1, "Error: list index out of range"),
    (MemoryError(), 1, "Error: MemoryError"),
    (KeyError("missing key"), 1, "Error: missing key"),
    (AttributeError("'NoneType' object has no attribute 'x'"), 2, "Internal error (AttributeError: "),
])
def test_cli_turns_every_error_into_one_line(monkeypatch, tmp_path, error, code, line):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr("spatialclust.pipeline.run_pipeline", broken)
    result = runner.invoke(app, ["demo", "-o", str(tmp_path / "run"), "-q"])
    assert result.exit_code == code and result.output.splitlines()[-1].startswith(line)
    assert "Traceback" not in result.output
    verbose = runner.invoke(app, ["demo", "-o", str(tmp_path / "run"), "-vv"])
    assert verbose.exit_code == code and "Traceback (most recent call last)" in verbose.output
    assert f"in broken\n    raise error" in verbose.output


# ------------------------------------------------------------------------------ 6. odd outputs
def test_odd_output_paths_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    os.symlink(tmp_path / "elsewhere", tmp_path / "link")
    cases = {
        ".": "does not name a new folder", "/": "does not name a new folder", "..": "does not name a new folder",
        "sub/..": "does not name a new folder", str(tmp_path): "is the current working directory or holds it",
        "a_file": "exists and is not a directory", "link": "is a symbolic link",
        # were a folder named "   " and "[Errno 36] File name too long: '.<name>.<id>.tmp'" (name_max - 14 ... 255)
        "   ": "is named by blanks only", "x" * 250: "is 250 bytes long; at most 237 fit",
    }
    for output, message in cases.items():
        result = runner.invoke(app, ["demo", "-o", output, "-q"])
        assert result.exit_code == 1 and message in result.output, (output, result.output)
        assert result.output.count("\n") == 1
    assert _entries(tmp_path) == ["a_file", "link"]
    with pytest.raises(ValueError, match="does not name a new folder"):
        check_output_dir(".", overwrite=True)
    assert np.all([not p.name.startswith(".") for p in tmp_path.iterdir()])
    assert (_run(tmp_path / ("x" * 237)) / "result.txt").read_text() == "new"
    assert (_run(tmp_path / ("x" * 237), overwrite=True) / "result.txt").read_text() == "new"
