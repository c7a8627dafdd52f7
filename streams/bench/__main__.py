"""``python -m streams.bench``: see :mod:`streams.bench`."""

from streams.bench import main

main()
