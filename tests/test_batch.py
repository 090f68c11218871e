"""Batches: many inputs, templates, worker processes, failures, resuming, interruption."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

import convvol
from convvol import batch
from convvol.cli import cli
from convvol.errors import ParameterError

RNG = np.random.default_rng(5)


def run(*args: str | os.PathLike[str]) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def make_images(directory: Path, count: int, size: tuple[int, int] = (12, 10)) -> list[Path]:
    """Tiny seeded RGB PNGs, a third of them in a sub-directory."""
    paths = []
    for index in range(count):
        folder = directory / "sub" if index % 3 == 2 else directory
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{index:03d}.png"
        Image.fromarray(RNG.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def expected_npy(path: Path, bank: str = "edges") -> np.ndarray:
    return convvol.apply_bank(convvol.read_volume(path), convvol.load_bank(bank))


# --- inputs -----------------------------------------------------------------------------


def test_expand_paths_directories_and_patterns(workdir: Path) -> None:
    images = make_images(workdir / "in", 6)
    (workdir / "in" / "notes.txt").write_text("not an image")
    (workdir / "in" / ".hidden.png").write_bytes(images[0].read_bytes())
    np.save(workdir / "in" / "volume.npy", np.zeros((4, 4, 3), np.float32))
    found = batch.expand_inputs(["in"])
    assert [(i.source, i.relpath) for i in found] == [
        ("in/img000.png", "."), ("in/img001.png", "."), ("in/img003.png", "."),
        ("in/img004.png", "."), ("in/sub/img002.png", "sub"), ("in/sub/img005.png", "sub"),
        ("in/volume.npy", "."),
    ]  # fmt: skip
    assert [i.stem for i in found][-1] == "volume"
    pattern = batch.expand_inputs(["in/**/*.png"])
    assert {(i.stem, i.relpath) for i in pattern} == {
        (p.stem, "sub" if p.parent.name == "sub" else ".") for p in images
    }
    # Each file once, in the order given; a plain path is taken as it is.
    mixed = batch.expand_inputs(["in/img001.png", "in/*.png", "nowhere.png"])
    assert [i.source for i in mixed] == [
        "in/img001.png",
        "in/img000.png",
        "in/img003.png",
        "in/img004.png",
        "nowhere.png",
    ]
    with pytest.raises(ParameterError, match="matches no images"):
        batch.expand_inputs(["in/*.jpg"])
    (workdir / "empty").mkdir()
    with pytest.raises(ParameterError, match="directory 'empty'"):
        batch.expand_inputs(["empty"])


def test_what_makes_a_batch(workdir: Path) -> None:
    make_images(workdir / "in", 2)
    assert not batch.is_batch(["in/img000.png"])
    assert not batch.is_batch(["-"])
    assert batch.is_batch(["in"])
    assert batch.is_batch(["in/*.png"])
    assert batch.is_batch(["in/img000.png", "in/img001.png"])


# --- the command --------------------------------------------------------------------------


def test_batch_with_a_bad_file_goes_on_and_exits_1(workdir: Path) -> None:
    images = make_images(workdir / "in", 24)
    (workdir / "in" / "broken.png").write_bytes(b"not a png at all")
    result = run("apply", "in", "-f", "edges", "-o", "out/{relpath}/{stem}.npy", "--jobs", "2")
    assert result.exit_code == 1, result.output
    assert "in/broken.png: not an image" in result.stderr
    assert "24 succeeded, 1 failed, 0 skipped" in result.stderr
    assert "1 of 25 files failed: in/broken.png" in result.stderr
    assert "Traceback" not in result.output
    for path in images:
        relative = path.relative_to(workdir / "in").with_suffix(".npy")
        assert np.array_equal(np.load(workdir / "out" / relative), expected_npy(path))
    assert not (workdir / "out" / "broken.npy").exists()
    assert not list((workdir / "out").rglob(".*"))  # no temporaries left


def test_jobs_do_not_change_results(workdir: Path) -> None:
    make_images(workdir / "in", 6, size=(40, 33))
    (workdir / "wide.yaml").write_text("filters: [{name: g, kernel: {gaussian: {sigma: 3}}}]\n")
    for jobs in ("1", "2"):
        result = run("apply", "in/*.png", "in/sub", "-f", "wide.yaml", "--method", "gemm",
                     "-o", f"j{jobs}/{{stem}}.npy", "-j", jobs, "-q")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert (result.stdout, result.stderr) == ("", "")
    for path in sorted((workdir / "j1").iterdir()):
        single = workdir / f"single_{path.name}"
        source = next((workdir / "in").rglob(path.stem + ".png"))
        assert run("apply", source, "-f", "wide.yaml", "--method", "gemm", "-o", single,
                   "-q").exit_code == 0  # fmt: skip
        assert np.array_equal(np.load(path), np.load(workdir / "j2" / path.name))
        assert np.array_equal(np.load(path), np.load(single))


def test_templates_need_stem_and_clashes_are_refused_before_work(workdir: Path) -> None:
    make_images(workdir / "a", 2)
    make_images(workdir / "b", 2)
    result = run("apply", "a", "-f", "edges", "-o", "out/result.png")
    assert result.exit_code == 2
    assert "include {stem}" in result.stderr
    result = run("apply", "a", "b", "-f", "edges", "-o", "out/{stem}.png")
    assert result.exit_code == 2
    assert "a/img000.png and b/img000.png would both write out/img000.png" in result.stderr
    assert "{relpath}" in result.stderr
    result = run("apply", "a/img000.png", "a/img001.png", "-f", "edges", "-o", "-")
    assert result.exit_code == 2
    assert "not -" in result.stderr
    result = run("apply", "a", "-f", "edges", "-o", "out/{stem}.png", "--explain")
    assert result.exit_code == 2
    result = run("apply", "a", "-f", "edges", "-o", "{stem}.jp2")
    assert result.exit_code == 2
    assert not (workdir / "out").exists()
    assert not list(workdir.glob("*.jp2"))
    result = run("apply", "a/img000.png", "a/img001.png", "-f", "edges", "-o", "a/{stem}.png")
    assert result.exit_code == 2
    assert "never overwrites its input" in result.stderr


def test_default_template_and_split(workdir: Path) -> None:
    make_images(workdir / "in", 3)
    result = run("apply", "in/img000.png", "in/img001.png", "-f", "edges", "-q")
    assert result.exit_code == 0, result.output
    assert (workdir / "img000_edges.png").is_file()
    assert (workdir / "img001_edges.png").is_file()
    result = run("apply", "in", "-f", "edges", "--split", "-o", "s/{relpath}/{stem}-{name}.png")
    assert result.exit_code == 0, result.output
    names = [f.name for f in convvol.load_bank("edges").filters]
    assert sorted(p.name for p in (workdir / "s" / "sub").iterdir()) == sorted(
        f"img002-{name}.png" for name in names
    )


def test_skip_existing_resumes_without_rewriting(workdir: Path) -> None:
    make_images(workdir / "in", 9)
    assert run("apply", "in", "-f", "blur", "-o", "out/{stem}.png", "-j", "1").exit_code == 0
    outputs = sorted((workdir / "out").iterdir())
    assert len(outputs) == 9
    past = time.time() - 1000
    for path in outputs:
        os.utime(path, (past, past))
    outputs[4].unlink()
    result = run("apply", "in", "-f", "blur", "-o", "out/{stem}.png", "--skip-existing")
    assert result.exit_code == 0, result.output
    assert "1 succeeded, 0 failed, 8 skipped" in result.stderr
    assert outputs[4].is_file()
    for path in outputs[:4] + outputs[5:]:
        assert path.stat().st_mtime == pytest.approx(past)
    # --split: a file is skipped only when all its channels' files exist.
    run("apply", "in", "-f", "edges", "--split", "-o", "s/{stem}_{index}.png", "-j", "1")
    (workdir / "s" / "img003_1.png").unlink()
    result = run("apply", "in", "-f", "edges", "--split", "-o", "s/{stem}_{index}.png",
                 "--skip-existing", "-j", "1")  # fmt: skip
    assert "1 succeeded, 0 failed, 8 skipped" in result.stderr
    assert (workdir / "s" / "img003_1.png").is_file()


def test_file_urls_through_fsspec(workdir: Path) -> None:
    pytest.importorskip("fsspec")
    images = make_images(workdir / "in", 3)
    result = run("apply", f"file://{workdir}/in/*.png", "-f", "edges", "-j", "1",
                 "-o", f"file://{workdir}/remote/{{stem}}.npy")  # fmt: skip
    assert result.exit_code == 0, result.output
    for path in images[:2]:
        assert np.array_equal(np.load(workdir / "remote" / f"{path.stem}.npy"), expected_npy(path))


def test_progress_bar_only_on_a_terminal(workdir: Path) -> None:
    if shutil.which("script") is None:
        pytest.skip("needs util-linux's script for a pseudo-terminal")
    make_images(workdir / "in", 4)
    command = f'"{sys.executable}" -m convvol apply in -f edges -o "out/{{stem}}.png" -j 1'
    done = subprocess.run(
        ["script", "-qec", command, "/dev/null"], cwd=workdir, capture_output=True, text=True,
        timeout=120, check=False, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", done.stdout)
    assert "4/4 files" in screen
    assert "files/s" in screen
    assert "4 succeeded, 0 failed, 0 skipped" in screen
    piped = run("apply", "in", "-f", "edges", "-o", "piped/{stem}.png", "-j", "1")
    assert piped.stderr.splitlines() == [
        next(line for line in piped.stderr.splitlines() if "4 succeeded" in line)
    ]  # one plain summary line, no bar


# --- interruption --------------------------------------------------------------------------


SLOW_BANK = "filters: [{name: g, kernel: {gaussian: {sigma: 6}}, depthwise: true}]\n"


def start_batch(workdir: Path, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "convvol", "apply", "in", "-f", "slow.yaml", "--method",
               "gemm", "-o", "out/{stem}.png", "-j", "2", *extra]  # fmt: skip
    return subprocess.Popen(
        command,
        cwd=workdir,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # SIGINT as a terminal delivers it, even when the tests run in the background
        # (a shell's `&` makes them ignore it, and children inherit that)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_outputs(workdir: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list((workdir / "out").glob("*.png"))) >= count:
            return
        time.sleep(0.02)
    raise AssertionError("the batch made no progress")


def assert_complete_outputs(workdir: Path) -> list[Path]:
    """Every visible output is a whole image; nothing half-written is left anywhere."""
    outputs = sorted((workdir / "out").iterdir())
    for path in outputs:
        assert not path.name.startswith("."), path
        with Image.open(path) as image:
            image.load()  # a truncated PNG fails here
    return outputs


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "kill"])
def test_interrupted_batch_leaves_complete_files_and_resumes(workdir: Path, how: str) -> None:
    make_images(workdir / "in", 32, size=(160, 160))
    (workdir / "slow.yaml").write_text(SLOW_BANK)
    process = start_batch(workdir)
    try:
        wait_for_outputs(workdir, 2)
    except AssertionError:
        process.kill()
        raise AssertionError(process.communicate()[1]) from None
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)  # the terminal sends it to the whole group
    elif how == "sigterm":
        process.terminate()  # the batch process only: it stops its workers itself
    else:
        process.kill()  # the batch process only: its workers finish their file and go
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("the interrupted batch did not stop") from None
    if how != "kill":
        assert process.returncode == {"ctrl-c": 130, "sigterm": 143}[how], stderr
        assert "rerun with --skip-existing" in stderr
        assert "Traceback" not in stderr
    finished = assert_complete_outputs(workdir)
    assert 2 <= len(finished) < 32
    resumed = start_batch(workdir, "--skip-existing")
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert f"{len(finished)} skipped" in stderr
    outputs = assert_complete_outputs(workdir)
    assert len(outputs) == 32
    assert not [p for p in (workdir / "out").iterdir() if p.name.startswith(".")]


def test_a_worker_that_dies_costs_no_file(workdir: Path) -> None:
    """A worker killed mid-file (as by the out-of-memory killer): its files run again."""
    make_images(workdir / "in", 24, size=(160, 160))
    (workdir / "slow.yaml").write_text(SLOW_BANK)
    process = start_batch(workdir)
    try:
        wait_for_outputs(workdir, 3)
        psutil = pytest.importorskip("psutil")  # comes with distributed (the dask extra)
        workers = [child for child in psutil.Process(process.pid).children()  # forked or
                   if "resource_tracker" not in " ".join(child.cmdline())]  # spawned # fmt: skip
        workers[0].kill()
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, stderr
    assert "24 succeeded, 0 failed, 0 skipped" in stderr
    assert len(assert_complete_outputs(workdir)) == 24


def test_output_folders_made_by_another_worker_meanwhile(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers race to make the same new folder: the loser uses it, and never removes it."""
    from convvol.io import OutputSet

    made_elsewhere = workdir / "out" / "sub"
    made_elsewhere.mkdir(parents=True)  # as if another process had just made it
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: False if self == made_elsewhere
                        else real_exists(self))  # fmt: skip
    outputs = OutputSet()
    with outputs.open(made_elsewhere / "a.npy") as stream:
        stream.write(b"x")
    outputs.discard()  # this file failed: its outputs go
    monkeypatch.undo()
    assert made_elsewhere.is_dir()  # not ours to remove
    assert list(made_elsewhere.iterdir()) == []


# --- one flow: a file alone and the same file in a batch ----------------------------------


@pytest.mark.parametrize("suffix", [".png", ".npy"])
def test_one_file_alone_and_in_a_batch_give_the_same_bytes_and_messages(
    workdir: Path, suffix: str
) -> None:
    """Both go through convvol.jobs.run_job: the same output bytes, the same line saying
    what was written, and the same one-line error for a bad file."""
    make_images(workdir / "in", 1)
    alone = run("apply", "in/img000.png", "-f", "edges", "-o", f"alone/{{stem}}{suffix}")
    many = run("apply", "in", "-f", "edges", "-o", f"many/{{stem}}{suffix}", "-j", "1")
    assert alone.exit_code == 0, alone.output
    assert many.exit_code == 0, many.output
    made = (workdir / "alone" / f"img000{suffix}").read_bytes()
    assert made == (workdir / "many" / f"img000{suffix}").read_bytes()

    from convvol.jobs import Item, JobOptions, process_file, run_job

    options = JobOptions(banks=(convvol.load_bank("edges"),), template=f"lib/{{stem}}{suffix}")
    (item,) = batch.expand_inputs(["in"])
    assert item == Item.of("in/img000.png")
    direct = run_job(item, options)
    batched = process_file(item, options)
    wrote = f"wrote lib/img000{suffix}: 12×10×3 from {item.source}"
    assert direct.message == batched.message == wrote
    assert alone.stderr.strip() == f"wrote alone/img000{suffix}: 12×10×3 from in/img000.png"

    (workdir / "bad").mkdir()
    (workdir / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    bad_alone = run("apply", "bad/broken.png", "-f", "edges", "-o", f"x/{{stem}}{suffix}")
    bad_many = run("apply", "bad", "-f", "edges", "-o", f"y/{{stem}}{suffix}", "-j", "1")
    error_line = bad_alone.stderr.splitlines()[0]
    assert error_line.startswith("convvol: error: bad/broken.png: ")
    assert error_line in bad_many.stderr.splitlines()
    assert not (workdir / "x").exists()
    assert not (workdir / "y").exists()


# --- part-files: whose they are (the fault soak's K1 and K2) ----------------------------------


def _ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_failed_files_part_file_from_a_killed_worker_is_removed(workdir: Path) -> None:
    """A worker killed while writing out/bad.png left its part-file; the file then failed
    (here: its input is damaged). The batch's end removes the part-file anyway."""
    make_images(workdir / "in", 2)
    (workdir / "in" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    (workdir / "out").mkdir()
    left = workdir / "out" / f".bad.png.{_ended_pid()}-0123456789ab.convvol-part"
    left.write_bytes(b"half a file")
    result = run("apply", "in", "-f", "edges", "-o", "out/{stem}.png", "-j", "1")
    assert result.exit_code == 1
    assert not left.exists()
    assert sorted(p.name for p in (workdir / "out").iterdir()) == ["img000.png", "img001.png"]


def test_another_live_convvols_part_files_are_left_alone(workdir: Path) -> None:
    """A second convvol writing out/img000.png keeps its part-file however our batch ends."""
    make_images(workdir / "in", 2)
    (workdir / "out").mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = workdir / "out" / f".img000.png.{other.pid}-0123456789ab.convvol-part"
        theirs.write_bytes(b"being written")
        old = workdir / "out" / ".img001.png.0123456789ab.convvol-part"  # no pid: an old one
        old.write_bytes(b"left by an older convvol")
        assert run("apply", "in", "-f", "edges", "-o", "out/{stem}.png", "-j", "1").exit_code == 0
        assert theirs.exists()
        assert not old.exists()
    finally:
        other.kill()
        other.wait()
    batch.remove_temporaries([str(workdir / "out" / "img000.png")])
    assert not theirs.exists()  # its writer has ended now


def _pool_machinery_fails() -> None:
    raise OSError(9, "Bad file descriptor")  # as a worker's task queue did once in the soak


@pytest.mark.parametrize("context", ["WorkerContext", "ForkedWorkerContext"])
def test_a_worker_whose_pool_fails_under_it_ends_without_a_traceback(context: str) -> None:
    """The batch reports a dead worker in one line (and retries its file); the worker
    itself, spawned or forked, adds nothing to stderr, unless CONVVOL_DEBUG asks for the
    traceback."""
    script = (
        f"import sys; sys.path[:0] = [{str(Path(__file__).parent)!r}]\n"
        f"from convvol.worker_process import {context}\n"
        "from test_batch import _pool_machinery_fails\n"
        "if __name__ == '__main__':\n"
        f"    p = {context}().Process(target=_pool_machinery_fails); p.start(); p.join()\n"
        "    print(p.exitcode)\n"
    )
    for debug, quiet in (("0", True), ("1", False)):
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
            env={**os.environ, "CONVVOL_DEBUG": debug}, check=False,
        )  # fmt: skip
        assert done.stdout.strip() == "1", done.stderr
        assert ("Traceback" not in done.stderr) == quiet, done.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers fork on Linux only")
def test_a_forked_worker_starts_with_the_default_stop_signals() -> None:
    """The batch's SIGTERM and SIGHUP handlers raise in its own main thread; a forked
    worker must not run them (the pool terminates a worker still starting with SIGTERM:
    the soak saw the batch's handler raise inside the worker's initializer)."""
    script = (
        "import signal\n"
        "from convvol.worker_process import ForkedWorkerContext, worker_context\n"
        "def report(queue):\n"
        "    queue.put([signal.getsignal(s) == signal.SIG_DFL\n"
        "               for s in (signal.SIGTERM, signal.SIGHUP)])\n"
        "if __name__ == '__main__':\n"
        "    for number in (signal.SIGTERM, signal.SIGHUP):\n"
        "        signal.signal(number, lambda *args: None)\n"
        "    context = worker_context()\n"
        "    assert isinstance(context, ForkedWorkerContext)\n"
        "    queue = context.SimpleQueue()\n"
        "    p = context.Process(target=report, args=(queue,)); p.start(); p.join()\n"
        "    print(queue.get(), callable(signal.getsignal(signal.SIGTERM)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.stdout.strip() == "[True, True] True", done.stderr  # the batch keeps its own


class _ExecutorManagerThread(threading.Thread):
    """Named as CPython's pool manager thread, which can die of a race as a pool breaks."""

    def run(self) -> None:
        raise RuntimeError("dictionary changed size during iteration")


def test_a_pool_managers_death_is_quiet_but_other_threads_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(str(args.exc_value)))
    monkeypatch.delenv("CONVVOL_DEBUG", raising=False)
    for thread in (_ExecutorManagerThread(), threading.Thread(target=_pool_machinery_fails)):
        with batch.manager_deaths_quiet():
            thread.start()
            thread.join()
    assert seen == ["[Errno 9] Bad file descriptor"]  # the manager's death said nothing
    monkeypatch.setenv("CONVVOL_DEBUG", "1")
    with batch.manager_deaths_quiet():
        manager = _ExecutorManagerThread()
        manager.start()
        manager.join()
    assert seen[-1] == "dictionary changed size during iteration"
