"""The models (section 3): CuratorNet, VBPR, and the scorers that rank the catalogue for Table 2 (with VisRank, Random and Oracle)."""
