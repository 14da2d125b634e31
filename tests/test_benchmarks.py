"""The benchmark scripts run end to end (their figures are never asserted: they are measured and reported)."""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, args: str) -> str:
    """Run a benchmark as a user does, in its own process (the scripts set torch's thread count for themselves)."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args.split()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Skipping" not in result.stderr, result.stderr  # no video may go missing under running workers
    return result.stdout


def test_data_throughput_benchmark_prints_its_tables(tmp_path):
    out = run_benchmark(
        "data_throughput.py",
        "--recipes mlfo --num-videos 3 --num-frames 40 --size 48x64 --output-size 32 --num-workers 0 "
        f"--batch-size 2 --repeats 2 --video-dir {tmp_path}",
    )
    rows = [line for line in out.splitlines() if line.startswith("| mlfo | 32 |")]
    assert len(rows) == 2, out  # CPU-time and wall-clock tables; MLFO decodes 2 x 16 frames per clip
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 8 and all(cell for cell in cells), row
        for ratio in (cells[3], cells[5], cells[7]):  # "69.4 (0.84)" or "0.63 (0.60-0.66)"
            numbers = ratio.split(" ", 1)[-1].strip("()").replace("-", " ").split()
            assert all(float(x) > 0 for x in numbers), ratio
    assert "CPU milliseconds per clip" in out


def test_batch_transfer_benchmark_prints_its_table():
    out = run_benchmark(
        "batch_transfer.py", "--num-videos 4 --size 48x64 --batch-size 2 --passes 1 --consumer-seconds 0.05"
    )
    rows = [line for line in out.splitlines() if line.startswith("| one ")]
    assert len(rows) == 3 and rows[0].endswith("| 1.00 |"), out


def test_train_throughput_benchmark_prints_its_table(tmp_path):
    out = run_benchmark(
        "train_throughput.py",
        "--device cpu --methods mlfo --num-videos 2 --batch-size 2 --steps 2 --repeats 1 --num-workers 0 "
        f"--video-size 48x64 --video-dir {tmp_path}",
    )
    rows = [line for line in out.splitlines() if line.startswith("| mlfo |")]
    assert len(rows) == 1, out
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert len(cells) == 11 and cells[9] == "-", rows  # no peak known for a CPU
    # videos/s of loop and synthetic step, their ratio, GFLOP per video, TFLOP/s, memory: measured, all positive
    assert all(float(cells[i]) > 0 for i in (3, 4, 5, 6, 10)), rows
