"""`landcover`: the command line, the top layer over `pipeline`, `models` and `workflows`.

Each command module parses its options and calls one function of the layer below; user errors
(LandcoverError) and invalid settings print as one line and exit 2 (:mod:`cli.main`).
"""
