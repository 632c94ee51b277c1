"""Scores with intervals, the eval stage, the recipe's advice."""
