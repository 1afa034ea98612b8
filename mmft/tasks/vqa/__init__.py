"""The vqa task package."""
