"""Evaluation of challenger against champion."""
