"""Medians of the wrk runs the serve benches write: `{work}/wrk-{server}-{kind}-{run}.txt`."""
import re
import statistics
import sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
SIZE = {"B": 1 / 2**20, "KB": 1 / 2**10, "MB": 1, "GB": 2**10}


def parse(path):
    """(requests/s, p99 latency in ms, MiB/s) of one wrk run; a failed request fails the bench."""
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    v, u = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()
    v2, u2 = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", text).groups()
    for bad in (r"Non-2xx or 3xx responses: \d+", r"Socket errors: .*"):
        m = re.search(bad, text)
        if m:
            sys.exit(f"{path}: {m.group(0)}")
    return rps, float(v) * UNITS[u], float(v2) * SIZE[u2]


def medians(work, runs, server, kind):
    """[requests/s, p99 ms, MiB/s], each the median over `runs` runs."""
    rows = [parse(f"{work}/wrk-{server}-{kind}-{r}.txt") for r in range(1, runs + 1)]
    return [statistics.median(c) for c in zip(*rows)]
