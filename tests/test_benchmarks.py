"""The data throughput benchmark runs end to end (figures themselves are never asserted: they are measured)."""

import runpy
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_data_throughput_benchmark_prints_its_tables(tmp_path, capsys):
    main = runpy.run_path(str(BENCHMARKS / "data_throughput.py"))["main"]
    args = ["--recipes", "mlfo", "--num-videos", "3", "--num-frames", "40", "--size", "48x64"]
    main([*args, "--output-size", "32", "--num-workers", "0", "--batch-size", "2", "--repeats", "2"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| mlfo | 32 |")]
    assert len(rows) == 2, out  # CPU-time and wall-clock tables; MLFO decodes 2 x 16 frames per clip
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 8 and all(cell for cell in cells), row
        for ratio in (cells[5], cells[7]):  # "0.63 (0.60-0.66)"
            median, low, high = (
                float(x) for x in ratio.replace("(", " ").replace(")", "").replace("-", " ").split()
            )
            assert 0 < low <= high and median > 0, ratio
    assert "CPU milliseconds per clip" in out
