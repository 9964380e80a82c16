"""Example scripts; :mod:`examples.common` holds what they share."""
