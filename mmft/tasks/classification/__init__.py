"""The classification task package."""
