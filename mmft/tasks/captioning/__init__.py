"""The captioning task package."""
