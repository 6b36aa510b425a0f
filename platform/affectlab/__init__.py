"""affectlab: train, sweep and serve affective-computing workloads on Ray."""

__version__ = "0.1.0"
