#!/usr/bin/env python3
"""The baseline for the detector throughput bench: NAB's windowed Gaussian
detector written the straightforward way with numpy (as NAB's own
windowedGaussian detector is: a list window, numpy mean/std on refresh),
timed over the same NAB files as `autopilot detect bench`.

Prints a table line and `BASELINE <samples per second>` for the bench script.
Only the scoring loop is timed, not CSV parsing.
"""
import csv
import math
import os
import sys
import time

import numpy


def normal_probability(x, mean, std):
    """Upper tail probability of a normal distribution, as in NAB."""
    if x < mean:
        x = 2 * mean - x
    z = (x - mean) / std
    return 0.5 * math.erfc(z / math.sqrt(2))


def score_file(values, window_size=6400, step_size=100):
    window, step_buffer = [], []
    mean, std = 0.0, 1.0
    scores = []
    for v in values:
        score = 0.0
        if window:
            score = 1 - normal_probability(v, mean, std)
        if len(window) < window_size:
            window.append(v)
            mean, std = numpy.mean(window), numpy.std(window)
            std = std if std != 0.0 else 0.000001
        else:
            step_buffer.append(v)
            if len(step_buffer) == step_size:
                window = window[step_size:] + step_buffer
                step_buffer = []
                mean, std = numpy.mean(window), numpy.std(window)
                std = std if std != 0.0 else 0.000001
        scores.append(score)
    return scores


def main():
    nab = sys.argv[1] if len(sys.argv) > 1 else "../shared/nab"
    files = []
    for group in sorted(os.listdir(os.path.join(nab, "data"))):
        d = os.path.join(nab, "data", group)
        for name in sorted(os.listdir(d)):
            if name.endswith(".csv"):
                with open(os.path.join(d, name)) as f:
                    rows = list(csv.reader(f))[1:]
                files.append([float(r[1]) for r in rows])
    total = sum(len(v) for v in files)
    start = time.perf_counter()
    for values in files:
        score_file(values)
    elapsed = time.perf_counter() - start
    rate = total / elapsed
    print(f"| python/numpy windowed gaussian (baseline) | {rate:.0f} | {elapsed * 1e9 / total:.1f} |")
    print(f"BASELINE {rate:.0f}")


if __name__ == "__main__":
    main()
