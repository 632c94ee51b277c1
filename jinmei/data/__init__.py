"""The corpus contract, the fixed dev sets and training pools, the demo generator."""
