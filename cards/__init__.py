"""Dataset card templates, shipped inside the wheel as ``synth_datasets.cards``."""
