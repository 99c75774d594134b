"""Backbone families with named endpoints and insertion points."""
