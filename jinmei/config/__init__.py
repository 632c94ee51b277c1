"""Params.yaml typed and checked once; refusals before any stage runs; profiles."""
