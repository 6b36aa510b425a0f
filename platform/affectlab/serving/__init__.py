"""Ray Serve applications: a generic layer (``layer``, ``registry``, ``images``, ``faces``)
and one predictor + app builder per workload (``pain``). See docs/serving.md."""
