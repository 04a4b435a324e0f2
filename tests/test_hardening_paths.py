"""Hardening: no output path can destroy a file, every writer takes its lock, inputs never block.

Each case is a command a hostile (or careless) user ran: it must end with exit 2, one line on
stderr naming the file and the problem, and nothing written or changed on disk. The JUnit file is
written by renaming a temporary over its path, so anything there but a regular file the user
named (a device, a FIFO, a socket, a symbolic link, a directory, an input) must be refused
before anything runs.
"""

import contextlib
import hashlib
import os
import signal
import socket
import stat
from pathlib import Path

import pytest

from pie_audit._atomic import (
    CANNOT_RESOLVE,
    IS_A_DIRECTORY,
    IS_A_LINK,
    LOCKED,
    NOT_A_FILE,
    OUTPUT_IN_INPUT,
    OUTPUT_IN_OUTPUT,
    check_output_path,
    exclusive_lock,
)
from pie_audit.audit._settings import NO_TABLE, TOOL_NOT_A_TABLE
from pie_audit.errors import OutputError
from pie_audit.interchange._population import BAD_MODEL_DIR_NAME
from pie_audit.report._thumbnails import NOT_A_REGULAR_FILE

from cli_run import error_line, run

LOOP = "a loop of symbolic links"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    # The CLI reads ./pyproject.toml and writes ./reports/ by default.
    monkeypatch.chdir(tmp_path)


@contextlib.contextmanager
def deadline(seconds):
    """Fail, instead of hanging the suite, when the block blocks (open() on a FIFO does)."""

    def expired(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(directory: Path) -> dict:
    """Every file under ``directory`` and its content's digest: what a refusal must leave alone."""
    return {p.relative_to(directory): digest(p) for p in sorted(directory.rglob("*")) if p.is_file()}


# ---- --junit: what a rename would destroy ---------------------------------------------------------


def _char_device(path: Path) -> Path:
    """A character device of our own (the null device's numbers), where the system lets us make one."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a character device here ({e.strerror})")
    return path


def _socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays
    return path


SPECIAL = {
    "a character device": (_char_device, stat.S_ISCHR),
    "a FIFO (named pipe)": (lambda p: os.mkfifo(p) or p, stat.S_ISFIFO),
    "a socket": (_socket, stat.S_ISSOCK),
}


@pytest.mark.parametrize("kind", SPECIAL)
def test_a_junit_path_that_is_not_a_regular_file_is_refused_and_left_as_it_was(
    harmed_populations, tmp_path, capsys, kind
):
    make, is_kind = SPECIAL[kind]
    junit = make(tmp_path / "g")
    assert run("compare", *harmed_populations, "--out", tmp_path / "r", "--junit", junit, "-q") == 2
    assert error_line(capsys) == NOT_A_FILE.format(path=junit, kind=kind)
    assert is_kind(os.lstat(junit).st_mode)  # still what it was
    assert not (tmp_path / "r").exists()  # refused before the report was written


def test_dev_null_stays_a_character_device(harmed_populations, tmp_path, capsys):
    # The library refuses it first: only then is the command run (as root it would replace
    # the machine's /dev/null if it did not).
    with pytest.raises(OutputError):
        check_output_path("/dev/null")
    before = os.lstat("/dev/null")
    assert run("compare", *harmed_populations, "--out", tmp_path / "r", "--junit", "/dev/null", "-q") == 2
    assert error_line(capsys) == NOT_A_FILE.format(path="/dev/null", kind="a character device")
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert not (tmp_path / "r").exists()


def test_dev_stdout_is_refused_as_the_link_it_is(harmed_populations, tmp_path, capsys):
    if not os.path.islink("/dev/stdout"):
        pytest.skip("/dev/stdout is not a symbolic link here")
    with pytest.raises(OutputError):
        check_output_path("/dev/stdout")
    target = os.readlink("/dev/stdout")
    assert run("compare", *harmed_populations, "--out", tmp_path / "r", "--junit", "/dev/stdout", "-q") == 2
    assert error_line(capsys) == IS_A_LINK.format(path="/dev/stdout")
    assert os.readlink("/dev/stdout") == target


def test_a_symbolic_link_as_junit_is_refused_and_its_target_unchanged(harmed_populations, tmp_path, capsys):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "gate.xml"
    link.symlink_to(target)
    dangling = tmp_path / "dangling.xml"
    dangling.symlink_to(tmp_path / "nowhere.xml")
    for junit in (link, dangling):
        assert run("compare", *harmed_populations, "--out", tmp_path / "r", "--junit", junit, "-q") == 2
        assert error_line(capsys) == IS_A_LINK.format(path=junit)
        assert junit.is_symlink()
    assert target.read_text() == "keep me" and not (tmp_path / "nowhere.xml").exists()
    assert not (tmp_path / "r").exists()


def test_a_directory_as_junit_is_refused(harmed_populations, tmp_path, capsys):
    base, _ = harmed_populations
    before = tree(base)
    assert run("compare", *harmed_populations, "--out", tmp_path / "r", "--junit", base, "-q") == 2
    assert error_line(capsys) == IS_A_DIRECTORY.format(path=base)
    assert tree(base) == before and not (tmp_path / "r").exists()


def test_a_junit_inside_an_input_population_is_refused_and_the_input_unchanged(harmed_populations, tmp_path, capsys):
    base, pruned = harmed_populations
    before = {base: tree(base), pruned: tree(pruned)}
    for junit in (base / "model-000" / "predictions.parquet", pruned / "gate.xml", pruned / "gate.parquet"):
        assert run("compare", *harmed_populations, "--out", tmp_path / "r", "--junit", junit, "-q") == 2
        population = base if base in junit.parents else pruned
        assert error_line(capsys) == OUTPUT_IN_INPUT.format(path=junit, input=population)
    assert {base: tree(base), pruned: tree(pruned)} == before
    assert not (pruned / "gate.xml").exists() and not (tmp_path / "r").exists()


def test_a_junit_inside_the_report_is_refused_but_out_junit_xml_is_written_with_it(harmed_populations, tmp_path, capsys):
    out = tmp_path / "r"
    for junit in (out / "gate.xml", out / "summary.json", out / "ci" / "gate.xml", out):
        assert run("compare", *harmed_populations, "--out", out, "--junit", junit, "-q") == 2
        assert error_line(capsys) == OUTPUT_IN_OUTPUT.format(path=junit, output=out)
        assert not out.exists()
    # The one name a report directory may hold: written with the report, so the identical
    # command runs again.
    for _ in range(2):
        assert run("compare", *harmed_populations, "--out", out, "--junit", out / "junit.xml", "-q") == 1
        assert capsys.readouterr().err == ""
        assert (out / "junit.xml").read_text().startswith("<?xml")
        assert sorted(p.name for p in out.iterdir()) == ["classes.csv", "examples.parquet", "junit.xml", "report.html", "summary.json"]


def test_the_config_file_is_never_the_junit_file(harmed_populations, tmp_path, capsys):
    config = tmp_path / "gate.toml"
    config.write_text("[tool.pie-audit]\nmax-class-drop = 0.5\n")
    before = config.read_text()
    assert run("compare", *harmed_populations, "--config", config, "--out", tmp_path / "r", "--junit", config, "-q") == 2
    assert error_line(capsys) == OUTPUT_IN_INPUT.format(path=config, input=config)
    assert config.read_text() == before


def test_an_existing_regular_junit_file_is_replaced_as_asked(harmed_populations, tmp_path):
    junit = tmp_path / "gate.xml"
    junit.write_text("an old verdict")
    assert run("compare", *harmed_populations, "--out", tmp_path / "r", "--junit", junit, "-q") == 1
    assert junit.read_text().startswith("<?xml") and not junit.is_symlink()


def test_compare_refuses_its_outputs_before_any_audit(harmed_populations, tmp_path, capsys, monkeypatch):
    import pie_audit._compare

    monkeypatch.setattr(pie_audit._compare, "compare_populations", lambda *a, **k: pytest.fail("audited first"))
    base, _ = harmed_populations
    junit = base / "model-000" / "predictions.parquet"
    assert run("compare", *harmed_populations, "--out", tmp_path / "r", "--junit", junit, "-q") == 2
    assert error_line(capsys) == OUTPUT_IN_INPUT.format(path=junit, input=base)


def test_every_atomic_file_write_refuses_what_a_rename_would_destroy(tmp_path):
    from pie_audit._atomic import write_json

    target = tmp_path / "record.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    for path, message in ((link, IS_A_LINK.format(path=link)), (fifo, NOT_A_FILE.format(path=fifo, kind="a FIFO (named pipe)"))):
        with pytest.raises(OutputError) as e:
            write_json(path, {"a": 1})
        assert str(e.value) == message
    assert target.read_text() == "{}" and link.is_symlink() and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.json", "link.json", "record.json"]  # no temporary left


# ---- --out: loops and links -------------------------------------------------------------------


def test_a_symlink_loop_as_out_is_exit_2_naming_it(harmed_populations, tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert run("compare", *harmed_populations, "--out", loop, "-q") == 2
    assert error_line(capsys) == CANNOT_RESOLVE.format(path=loop, reason=LOOP)
    assert run("report", *harmed_populations, "--out", loop, "-q") == 2
    assert error_line(capsys) == CANNOT_RESOLVE.format(path=loop, reason=LOOP)
    assert run("train", "--out", loop, "--population", 1, "--epochs", 1, "-q") == 2
    assert error_line(capsys) == CANNOT_RESOLVE.format(path=loop, reason=LOOP)
    assert loop.is_symlink() and os.readlink(loop) == str(loop)


def test_a_symlink_as_a_report_directory_is_refused_not_replaced(harmed_populations, tmp_path, capsys):
    real = tmp_path / "real"
    assert run("compare", *harmed_populations, "--out", real, "-q") == 1
    before = tree(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert run("compare", *harmed_populations, "--out", link, "-q") == 2
    assert error_line(capsys) == IS_A_LINK.format(path=link)
    assert link.is_symlink() and tree(real) == before


# ---- the sweep: every refusal before any audit --------------------------------------------------


def test_report_refuses_its_outputs_before_any_audit(harmed_populations, tmp_path, capsys, monkeypatch):
    import pie_audit._compare

    def no_audit(*args, **kwargs):
        raise AssertionError("audited before the outputs were checked")

    monkeypatch.setattr(pie_audit._compare, "sweep", no_audit)
    base, pruned = harmed_populations
    before = tree(base)
    assert run("report", base, pruned, "--out", base / "sweep", "-q") == 2
    assert "the output would lie inside the population" in error_line(capsys)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert run("report", base, pruned, "--out", tmp_path / "mine", "-q") == 2
    assert "holds 'notes.txt', which is not part of a pie-audit sweep" in error_line(capsys)
    os.mkfifo(tmp_path / "images.npz")
    with deadline(20):
        assert run("report", base, pruned, "--out", tmp_path / "s", "--images", tmp_path / "images.npz", "-q") == 2
    assert error_line(capsys) == NOT_A_REGULAR_FILE.format(path=tmp_path / "images.npz", kind="a FIFO")
    assert tree(base) == before and not (tmp_path / "s").exists()


# ---- --images: never opened when it is not a regular file ---------------------------------------


def test_images_naming_a_fifo_is_refused_without_blocking(harmed_populations, tmp_path, capsys):
    fifo = tmp_path / "images.npz"
    os.mkfifo(fifo)
    with deadline(20):
        assert run("compare", *harmed_populations, "--out", tmp_path / "r", "--images", fifo, "-q") == 2
    assert error_line(capsys) == NOT_A_REGULAR_FILE.format(path=fifo, kind="a FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and not (tmp_path / "r").exists()


def test_images_naming_a_device_is_refused(harmed_populations, tmp_path, capsys):
    with deadline(20):
        assert run("compare", *harmed_populations, "--out", tmp_path / "r", "--images", "/dev/zero", "-q") == 2
    assert error_line(capsys) == NOT_A_REGULAR_FILE.format(path="/dev/zero", kind="a character device")


# ---- locks: predict takes the lock train holds ----------------------------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained small-cnn state dict for digits: predict runs it in a blink."""
    import torch

    from pie_audit.training import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "net.pt"
    torch.save(build_model("small-cnn", in_channels=1, image_size=8, num_classes=10).state_dict(), path)
    return path


def test_predict_is_refused_while_train_holds_the_population(model_file, tmp_path, capsys):
    population = tmp_path / "pop"
    population.mkdir()
    with exclusive_lock(population) as lock:
        assert run("predict", model_file, "--dataset", "digits", "--arch", "small-cnn", "--out", population, "-q") == 2
        assert error_line(capsys) == LOCKED.format(path=population, lock=lock)
    assert list(population.iterdir()) == []
    assert run("predict", model_file, "--dataset", "digits", "--arch", "small-cnn", "--out", population, "-q") == 0
    assert sorted(p.name for p in population.iterdir()) == ["net"]


def test_predict_holds_the_lock_while_it_writes(model_file, tmp_path, monkeypatch):
    import pie_audit.prediction._files as files

    held = []
    write_model = files.write_model

    def writing(out, *args, **kwargs):
        try:
            with exclusive_lock(out.parent):
                held.append(False)
        except OutputError:
            held.append(True)
        return write_model(out, *args, **kwargs)

    monkeypatch.setattr(files, "write_model", writing)
    assert run("predict", model_file, "--dataset", "digits", "--arch", "small-cnn", "--out", tmp_path / "pop", "-q") == 0
    assert held == [True]


# ---- config: a file named must set the rules -----------------------------------------------------


def test_a_config_without_the_table_is_refused(harmed_populations, tmp_path, capsys):
    config = tmp_path / "ci.toml"
    config.write_text("[project]\nname = 'x'\n")
    assert run("compare", *harmed_populations, "--config", config, "--out", tmp_path / "r") == 2
    assert error_line(capsys) == NO_TABLE.format(path=config)
    assert not (tmp_path / "r").exists()


def test_a_config_whose_tool_is_not_a_table_is_refused(harmed_populations, tmp_path, capsys):
    config = tmp_path / "ci.toml"
    config.write_text("tool = 5\n")
    assert run("compare", *harmed_populations, "--config", config, "--out", tmp_path / "r") == 2
    assert error_line(capsys) == TOOL_NOT_A_TABLE.format(path=config, value=5)
    # Found on the way up, it holds no table: passed over, as one without (and the defaults rule).
    (tmp_path / "pyproject.toml").write_text("tool = 5\n")
    assert run("compare", *harmed_populations, "--out", tmp_path / "r") == 1
    assert "rules: defaults" in capsys.readouterr().out


# ---- a newline in a model's name: the error stays one line --------------------------------------


def test_a_newline_in_a_model_directory_name_gives_one_line(harmed_populations, tmp_path, capsys):
    base, pruned = harmed_populations
    odd = base / "model-001\nextra"
    (base / "model-001").rename(odd)
    assert run("compare", base, pruned, "--out", tmp_path / "r", "-q") == 2
    assert error_line(capsys) == BAD_MODEL_DIR_NAME.format(path=base, name=ascii(odd.name))
    assert odd.is_dir() and not (tmp_path / "r").exists()


# ---- every other file the CLI opens: a FIFO is refused, never opened -----------------------------


def test_a_fifo_given_as_config_spec_or_model_is_refused_without_blocking(harmed_populations, tmp_path, capsys):
    from pie_audit.audit._settings import NOT_A_CONFIG_FILE
    from pie_audit.prediction._files import NOT_A_MODEL_FILE
    from pie_audit.study._study import NOT_A_FILE as NOT_A_SPEC_FILE

    for name in ("ci.toml", "study.toml", "net.pt"):
        os.mkfifo(tmp_path / name)
    cases = [
        (["compare", *harmed_populations, "--config", "ci.toml", "--out", "r"], NOT_A_CONFIG_FILE.format(path="ci.toml")),
        (["study", "status", "study.toml"], NOT_A_SPEC_FILE.format(path="study.toml")),
        (["study", "run", "study.toml"], NOT_A_SPEC_FILE.format(path="study.toml")),
        (["predict", "net.pt", "--dataset", "digits", "--arch", "small-cnn", "--out", "pop"], NOT_A_MODEL_FILE.format(path="net.pt")),
    ]
    for args, message in cases:
        with deadline(20):
            assert run(*args) == 2
        assert error_line(capsys) == message
    assert all(stat.S_ISFIFO(os.lstat(tmp_path / n).st_mode) for n in ("ci.toml", "study.toml", "net.pt"))
    assert not (tmp_path / "r").exists() and not (tmp_path / "pop").exists()
