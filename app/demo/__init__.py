"""The embedded demo world: a synthetic Open Images + YFCC100M in the real file formats."""
