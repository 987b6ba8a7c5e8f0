"""Command line, services and settings of Leadflow."""
