"""ViTPain / UNBC-McMaster constants (reference/pain.md §1)."""

AU_NAMES = ("AU4", "AU6", "AU7", "AU9", "AU10", "AU43")  # the model's AU order
AU_KEYS = ("label_AU_4", "label_AU_6", "label_AU_7", "label_AU_9", "label_AU_10", "label_AU_43")  # UNBC HDF5 keys
PSPI_MAX = 16  # PSPI = AU4 + max(AU6, AU7) + max(AU9, AU10) + AU43, on 0..16
PSPI_THRESHOLDS = (1, 2, 3)  # the binary heads and the AUROC / F1 cut-offs
