"""Baselines outside the language-model substrate: the paper's symbolic Maze with RLlib
(`symbolic_maze`)."""
