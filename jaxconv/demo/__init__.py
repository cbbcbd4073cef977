"""Reusable parts of train_demo.py: data, model, training."""
