"""Run by ``make`` or by maintainers, never imported by the chapters: the book
build and its profiles, benchmarks, GTSRB training and the asset / accuracy
CLIs.
"""
