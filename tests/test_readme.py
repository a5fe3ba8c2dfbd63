"""What a user copies from README.md and examples/README.md works: every
Python snippet runs as written; every command's options exist (the real
parser reads them); the commands that are quick, or have a --quick form,
run (from this venv, as the README's `.venv/bin/...` lines do)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusedseq.__main__ import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "examples" / "README.md"]
BIN = Path(sys.executable).parent
PACKAGE_PARENT = str(Path(__import__("fusedseq").__file__).resolve().parent.parent)


def fenced(text: str, languages: tuple) -> list[str]:
    """The bodies of the ```-fenced blocks whose language is one of ``languages``."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current = [] if line[3:].strip() in languages else False
            else:
                if current is not False:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current:
            current.append(line)
        elif current == []:
            current.append(line)
    return blocks


def python_snippets() -> list:
    return [pytest.param(code, id=f"{doc.name}#{i}") for doc in DOCS
            for i, code in enumerate(fenced(doc.read_text(), ("python",)))]


def commands() -> list[str]:
    """Shell lines of fenced blocks, indented blocks and `inline` table cells
    that run python, fusedseq or torchrun (comments dropped)."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        lines = [l for block in fenced(text, ("bash", "sh", "")) for l in block.splitlines()]
        lines += [l[4:] for l in text.splitlines() if l.startswith("    ") and not l.startswith("     ")]
        lines += re.findall(r"`((?:\.venv/bin/)?python [^`]+)`", text)
        for line in lines:
            line = line.split("  #")[0].split(" # ")[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if re.match(r"(\.venv/bin/)?(python|torchrun|fusedseq)(\s|$)", part) and part not in found \
                        and not re.search(r"\b[A-Z]{3,}\b", part):  # no placeholder (NAME)
                    found.append(part)
    return found


def fusedseq_argv(command: str):
    """The argv after ``-m fusedseq`` (or None if the command is not one)."""
    words = shlex.split(command)
    if "-m" in words and words[words.index("-m") + 1] == "fusedseq":
        return words[words.index("-m") + 2:]
    return None


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e["PYTHONPATH"] = os.pathsep.join([PACKAGE_PARENT] + [p for p in [e.get("PYTHONPATH")] if p])
    return e


@pytest.mark.parametrize("code", python_snippets())
def test_python_snippet_runs_as_written(code, capsys):
    torch.manual_seed(0)
    exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})


def test_the_docs_have_commands():
    cmds = commands()
    assert any("fusedseq bench" in c for c in cmds) and any("torchrun" in c for c in cmds)
    assert any("examples/menu.py" in c for c in cmds) and len(cmds) > 15


@pytest.mark.parametrize("command", [c for c in commands() if fusedseq_argv(c) is not None])
def test_every_fusedseq_command_parses(command):
    build_parser().parse_args(fusedseq_argv(command))


def run(argv: list[str], cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def as_here(command: str, quick: list[str]) -> list[str]:
    """The README's command with its .venv replaced by this interpreter's, plus ``quick`` options."""
    words = shlex.split(command)
    exe = words[0].split("/")[-1]
    return [sys.executable if exe == "python" else str(BIN / exe), *words[1:], *quick]


def test_train_resume_and_torchrun_lines_run(tmp_path):
    """The README's three training lines, shortened to a few steps of the quick model."""
    lines = [c for c in commands() if fusedseq_argv(c) and fusedseq_argv(c)[0] == "train"]
    assert len(lines) == 3 and lines[2].startswith(".venv/bin/torchrun "), lines
    quick = ["--quick", "--no-progress", "--checkpoint-every", "2"]
    for line in lines:
        words = [w if not w.isdigit() or int(w) < 100 else "4" for w in shlex.split(line)]   # --steps 2000 -> 4
        done = run(as_here(shlex.join(words), quick), tmp_path)
        assert "final loss" in done.stdout
    assert "resumed from step 4" not in done.stdout
    assert (tmp_path / "run2" / "metrics.json").exists() and '"processes": 2' in (tmp_path / "run2" / "metrics.json").read_text()


def test_script_commands_start(tmp_path):
    """examples/*.py and benchmarks/*.py as the docs call them (with --help: each is also run by its own test)."""
    scripts = {shlex.split(c)[1] for c in commands() if re.match(r"(\.venv/bin/)?python (examples|benchmarks)/", c)}
    assert len(scripts) >= 6, scripts
    for script in sorted(scripts):
        assert "usage" in run([sys.executable, str(ROOT / script), "--help"], ROOT).stdout
