"""The offline demo world: a synthetic Open Images + YFCC100M world written in the real source formats."""
