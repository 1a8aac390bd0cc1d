"""Rich views of a cluster for the terminal."""
