"""The retrieval task package."""
