"""Per-workload constants (class names, vocabularies, ranges, fps): stdlib only, so every
layer — data, models, metrics, serving — can import them."""
