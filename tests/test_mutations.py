"""Mutation tests: each bug of the table in csrc/emu/README.md is planted, one
at a time, into a self-test kernel or an op kernel the driver runs (-DFUSEDSEQ_MUTANT_<name>), and the
torch-free self-test driver must fail under the schedules the table says, and
only those: every planted bug is caught somewhere, and the documented table
stays true. The ASan+UBSan column is measured when FUSEDSEQ_EMU_SANITIZE is set
(CI's sanitizer step); otherwise it is taken on trust here."""
from __future__ import annotations

import re

import pytest

from emulated import build

pytestmark = pytest.mark.emulated

README = build.ROOT / "csrc" / "emu" / "README.md"
# Column header of the table -> how that column runs the driver.
SCHEDULES = {
    "round-robin, copies at wait": dict(schedule="round-robin", landing="wait"),
    "warp 0 ahead, copies at issue": dict(schedule="warp0-ahead", landing="issue"),
    "random (seed 1), copies at wait": dict(schedule="random", landing="wait", seed=1),
}
ASAN = "ASan+UBSan build (round-robin)"
GROUP = {"gemm_tc.cu": "gemm", "row_softmax.cu": "softmax", "persistent_rnn.cu": "rnn", "rnn.cu": "cuda_rnn",
         "gated_rnn.cu": "cuda_lstm"}
KERNEL_FILES = {k.name: k for k in build.KERNELS}


def documented_table() -> dict[str, dict]:
    """The mutation table of csrc/emu/README.md: name -> {"file", column -> caught}."""
    text = README.read_text()
    block = text.split("<!-- mutation-table:begin -->")[1].split("<!-- mutation-table:end -->")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.strip().splitlines()]
    header, rows = rows[0], [r for r in rows[2:]]
    table = {}
    for r in rows:
        name = re.fullmatch(r"`(\w+)`", r[0]).group(1)
        entry = {"file": r[1].strip("`")}
        for col, cell in zip(header[2:], r[2:]):
            if col in SCHEDULES or col == ASAN:
                assert cell in {"✓", "–"}, f"{name}/{col}: {cell!r}"
                entry[col] = cell == "✓"
        table[name] = entry
    return table


TABLE = documented_table()


def test_the_table_covers_the_issue():
    required = {"swapped_accumulator", "ldmatrix_lane_map", "missing_cp_async_wait", "missing_refill_barrier",
                "divergent_syncthreads", "missing_grid_barrier"}
    assert required <= set(TABLE)
    for name, row in TABLE.items():
        assert any(row[c] for c in [*SCHEDULES, ASAN]), f"{name} is caught nowhere"
        src = KERNEL_FILES[row["file"]].read_text()
        assert f"FUSEDSEQ_MUTANT_{name}" in src, f"{name} is not planted in {row['file']}"


@pytest.mark.parametrize("name", sorted(TABLE))
def test_mutant_is_caught_where_documented(name):
    if build.compiler() is None:
        pytest.skip("no C++ compiler to build the emulated programs")
    row = TABLE[name]
    exe = build.program("selftest_driver", mutant=name, mutant_file=row["file"])
    group = GROUP[row["file"]]
    if build.sanitizers():
        r = build.run(exe, [group], schedule="round-robin", landing="wait")
        assert (r.returncode != 0) == row[ASAN], f"{name} under {ASAN}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
        return
    observed = {}
    for col, how in SCHEDULES.items():
        r = build.run(exe, [group], **how)
        observed[col] = r.returncode != 0
        if observed[col]:
            # Caught by a check of the driver (a wrong result, or an emulator
            # report), never by a crash.
            assert re.search(r"^(FAIL|ERROR) ", r.stdout, re.M), r.stdout + r.stderr
    expected = {col: row[col] for col in SCHEDULES}
    assert observed == expected, f"{name}: caught {observed}, csrc/emu/README.md says {expected}"
