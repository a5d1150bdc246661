"""edgecls: multi-label image classifiers from fine-tuning to the edge."""

__version__ = "0.1.0"
