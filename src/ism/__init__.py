"""ism: shortcut models and improved shortcut models."""

__version__ = "0.1.0"
