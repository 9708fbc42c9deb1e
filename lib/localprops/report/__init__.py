"""Reads results and computes nothing cached: the claims' verdict rules, the
scorecard rows and their persistence, figures and the interactive explorer.
"""
