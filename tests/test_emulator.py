"""The SIMT emulator (csrc/emu/) on its own, without torch: the CUDA semantics
it reproduces and the misuse it must report with the line and the counts
(tests/emulated/emulator_checks.cpp), and the self-test kernels through their
torch-free driver (tests/emulated/selftest_driver.cpp), which is what CI's
ASan+UBSan build runs. Every test runs under the schedule of the environment
(FUSEDSEQ_EMU_SCHEDULE, FUSEDSEQ_EMU_CP_ASYNC; CI runs two)."""
from __future__ import annotations

import re

import pytest

from emulated import build

pytestmark = pytest.mark.emulated

CHECKS = re.findall(r'c\["(\w+)"\] = ', (build.ROOT / "tests/emulated/emulator_checks.cpp").read_text())


@pytest.fixture(scope="module")
def checks_program():
    if build.compiler() is None:
        pytest.skip("no C++ compiler to build the emulated programs")
    return build.program("emulator_checks", kernels=False)


@pytest.fixture(scope="module")
def selftest_driver():
    if build.compiler() is None:
        pytest.skip("no C++ compiler to build the emulated programs")
    return build.program("selftest_driver")


def test_every_check_is_collected():
    assert len(CHECKS) >= 20 and len(set(CHECKS)) == len(CHECKS)


@pytest.mark.parametrize("name", CHECKS)
def test_emulator(checks_program, name):
    r = build.run(checks_program, [name])
    assert r.returncode == 0 and f"PASS {name}" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("group", ["gemm", "softmax", "rnn", "cuda_rnn", "cuda_lstm", "fragments"])
def test_selftest_kernels_without_torch(selftest_driver, group):
    r = build.run(selftest_driver, [group])
    lines = r.stdout.splitlines()
    assert r.returncode == 0, r.stdout + r.stderr
    assert sum(line.startswith("PASS ") for line in lines) >= 2
    assert not any(line.startswith(("FAIL", "ERROR")) for line in lines)
