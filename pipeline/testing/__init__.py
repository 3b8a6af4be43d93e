"""Testing: the synthetic sample archive, its STAC server and the PROBA-V generator."""
