"""The data throughput benchmark runs end to end (figures themselves are never asserted: they are measured)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_data_throughput_benchmark_prints_its_tables(tmp_path):
    # run as a user runs it: its own process (it sets torch's thread count and an allocator variable for itself)
    args = [
        "--recipes",
        "mlfo",
        "--num-videos",
        "3",
        "--num-frames",
        "40",
        "--size",
        "48x64",
        "--output-size",
        "32",
    ]
    args += ["--num-workers", "0", "--batch-size", "2", "--repeats", "2", "--video-dir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "data_throughput.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    rows = [line for line in out.splitlines() if line.startswith("| mlfo | 32 |")]
    assert len(rows) == 2, out  # CPU-time and wall-clock tables; MLFO decodes 2 x 16 frames per clip
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 8 and all(cell for cell in cells), row
        for ratio in (cells[3], cells[5], cells[7]):  # "0.63" or "0.63 (0.60-0.66)"
            numbers = ratio.split(" ", 1)[-1].strip("()").replace("-", " ").split()
            assert all(float(x) > 0 for x in numbers), ratio
    assert "CPU milliseconds per clip" in out


def test_batch_transfer_benchmark_prints_its_table():
    args = [
        "--num-videos",
        "4",
        "--size",
        "48x64",
        "--batch-size",
        "2",
        "--passes",
        "1",
        "--consumer-seconds",
        "0.05",
    ]
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "batch_transfer.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| one ")]
    assert len(rows) == 3 and rows[0].endswith("| 1.00 |"), result.stdout
    assert "Skipping" not in result.stderr, result.stderr  # the workers stop before their videos are deleted
