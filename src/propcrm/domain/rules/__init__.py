"""Compiled rules, grouped by what they judge: limits, progress, exposure, schedule."""
