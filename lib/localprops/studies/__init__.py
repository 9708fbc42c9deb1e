"""One module per question the book asks: score studies (isotropy, symmetry,
noise floors), frequency, topology, Lipschitz, first order and attacks. Each
cached study names its own modules in its code version, so a change to one
study invalidates only its results.
"""
