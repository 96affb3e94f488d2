"""Figures of N capacity searches, as the perf reports quote them: the median with its
spread, the search whose result is the median, and a search's figure at its capacity
(standard library only)."""
import statistics


def spread(values):
    """Median, min, max and every value of those that exist; None for none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def median_run(runs, key):
    """The run whose `key` is the median (the lower one of an even count)."""
    ordered = sorted(runs, key=lambda r: r[key])
    return ordered[(len(ordered) - 1) // 2]


def at_capacity(run, key, default=None):
    """A figure of the step at a search's capacity (`default` if no step passed or the
    step did not measure it)."""
    step = run.get("at_capacity")
    return step.get(key, default) if step else default


def fmt(s, digits=0):
    """'median (min - max)', or the one value of a single run; '-' for none."""
    if s is None:
        return "-"
    if len(s["runs"]) == 1:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f} - {s['max']:.{digits}f})"


if __name__ == "__main__":
    # Self-test: python3 perf/distribution.py
    s = spread([3.0, None, 1.0, 2.0])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": [3.0, 1.0, 2.0]}, s
    assert spread([None]) is None
    runs = [{"c": 5}, {"c": 1}, {"c": 3}, {"c": 4}]
    assert median_run(runs, "c") == {"c": 3}
    assert at_capacity({"at_capacity": {"x": 1}}, "x") == 1 and at_capacity({"at_capacity": None}, "x", 0) == 0
    assert fmt(spread([2.0])) == "2" and fmt(s, 1) == "2.0 (1.0 - 3.0)" and fmt(None) == "-"
    print("distribution: self-test passed")
