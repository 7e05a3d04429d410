"""Local sandbox fleet."""
