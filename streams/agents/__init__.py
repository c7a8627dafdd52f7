"""Agent bodies that need more than a few lines: they move state between Faust tables and the
pure core, and send the outputs."""
