"""The model: training, tuning, evaluation and analysis of a scikit-learn Pipeline."""
