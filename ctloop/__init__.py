"""ctloop: continuous training for tabular ML. The core library; it never imports Prefect."""

__version__ = "0.1.0"
