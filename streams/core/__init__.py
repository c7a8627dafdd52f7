"""Pure pipeline logic: no faust, no I/O."""
