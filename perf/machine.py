"""The machine a perf report was measured on, as every report names it (standard library
only)."""


def cpu_model():
    """The CPU's model name from /proc/cpuinfo; "?" where it does not say."""
    with open("/proc/cpuinfo") as f:
        return next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
