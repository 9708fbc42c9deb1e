"""Numerics every result depends on: checks, the Philox generator, sampling, the
chunked evaluation engine, distances, the Mantel test and the results cache.
A change here invalidates every cached result.
"""
