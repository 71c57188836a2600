"""Print a compact table of a pytest-benchmark JSON: name, median (CUDA events if recorded,
else wall clock), and every numeric extra_info field.

    python benchmarks/summarize.py benchmarks/results/relevance_map_h100.json
"""

import json
import sys


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    machine = data["machine_info"]
    print(f"# {machine.get('gpu', machine.get('cpu', {}).get('brand_raw', '?'))}  torch {machine.get('torch', '?')}")
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        median_ms = info.get("median_ms_cuda_events", bench["stats"]["median"] * 1e3)
        extras = "  ".join(
            f"{key}={value:.3g}"
            for key, value in info.items()
            if isinstance(value, (int, float)) and key != "median_ms_cuda_events"
        )
        print(f"{bench['name']:<60} {median_ms:10.4f} ms  {extras}")


if __name__ == "__main__":
    main(sys.argv[1])
