"""The logic of each step as plain typed functions, unit-tested directly."""
