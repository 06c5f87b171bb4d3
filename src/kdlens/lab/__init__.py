"""Recipes that build the lab's own models: trained here, saved and reloaded like a user's checkpoint."""
